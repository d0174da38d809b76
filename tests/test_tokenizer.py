"""Tokenizers: the word vocabulary and sentencepiece subwords (trained here, for real)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, compose_cfg, make_sentences, tiny_overrides, write_corpus
from vae_text.core.errors import CheckpointError, ConfigError, DataError
from vae_text.data.tokenizer import (
    SPECIALS,
    UNK,
    SentencePieceTokenizer,
    TokenizerConfig,
    Vocab,
    build_tokenizer,
    tokenizer_from_state,
)
from vae_text.pipeline import TextVAEPipeline
from vae_text.run.checkpoint import load_model
from vae_text.train import train

SENTENCES = [s.split() for s in make_sentences(300, 11)] + [["the", "<unk>", "sees", "a", "zebra"]]


@pytest.fixture(scope="module")
def sp() -> SentencePieceTokenizer:
    return build_tokenizer(SENTENCES, TokenizerConfig(kind="sentencepiece", vocab_size=40))


def test_sentencepiece_round_trips_text_and_keeps_our_specials(sp):
    assert sp.itos[:4] == SPECIALS and len(sp) == 40
    for words in SENTENCES:
        ids = sp.encode(words)
        assert ids[-1] == sp.eos_id and sp.eos_id not in ids[:-1]
        assert sp.decode(ids) == words
    assert any(len(sp.encode(w)) > len(w) + 1 for w in SENTENCES)  # some words split in pieces


def test_sentencepiece_unknown_word_is_one_unk_id_never_spelt_out(sp):
    ids = sp.encode(["the", UNK, "cat"])
    assert ids.count(sp.unk_id) == 1
    assert sp.decode(ids) == ["the", UNK, "cat"]
    # encoding word by word equals sentencepiece's own encoding of the sentence
    words = SENTENCES[3]
    assert sp.encode(words)[:-1] == sp.sp.encode(" ".join(words))


def test_encode_batch_equals_encoding_each_sentence_word_by_word(sp):
    # repeated words, a literal <unk>, an empty sentence and a word the training text never had
    batch = [["the", "cat", "the"], [], ["okapi", UNK, "okapi"], SENTENCES[5]]
    expected = [[i for w in words for i in ([sp.unk_id] if w == UNK else sp.sp.encode(w))] + [sp.eos_id]
                for words in batch]
    assert sp.encode_batch(batch) == expected
    assert [sp.encode(words) for words in batch] == expected
    vocab = Vocab.build(SENTENCES)
    assert vocab.encode_batch(batch) == [vocab.encode(words) for words in batch]
    assert vocab.encode_batch(batch)[2] == [vocab.unk_id, vocab.unk_id, vocab.unk_id, vocab.eos_id]


def test_sentencepiece_decode_stops_at_eos_and_skips_pad_bos(sp):
    ids = sp.encode(["the", "dog"])
    assert sp.decode([sp.bos_id, *ids[:-1], sp.pad_id, sp.eos_id, *ids]) == ["the", "dog"]


def test_sentencepiece_bpe_and_training_is_deterministic():
    cfg = TokenizerConfig(kind="sentencepiece", model_type="bpe", vocab_size=45)
    a, b = build_tokenizer(SENTENCES, cfg), build_tokenizer(SENTENCES, cfg)
    assert a.proto == b.proto and len(a) == 45
    assert all(a.decode(a.encode(s)) == s for s in SENTENCES)


def test_sentencepiece_state_round_trip_and_mismatch(sp):
    state = sp.state()
    assert state["model"].dtype == torch.uint8  # loads under torch.load(weights_only=True)
    again = tokenizer_from_state(sp.itos, state, "ckpt")
    assert again.proto == sp.proto
    other = build_tokenizer(SENTENCES, TokenizerConfig(kind="sentencepiece", vocab_size=41))
    with pytest.raises(CheckpointError, match="ckpt: its sentencepiece model does not match its vocabulary"):
        tokenizer_from_state(sp.itos, other.state(), "ckpt")
    assert isinstance(tokenizer_from_state(["<pad>", "<bos>", "<eos>", "<unk>", "a"], None, "old"), Vocab)


def test_sentencepiece_errors(sp):
    with pytest.raises(ConfigError, match="tokenizer.vocab_size"):
        build_tokenizer(SENTENCES, TokenizerConfig(kind="sentencepiece", vocab_size=5000))
    with pytest.raises(DataError, match="not a readable sentencepiece model"):
        SentencePieceTokenizer(b"not a model")
    for key, value in [("kind", "bytes"), ("model_type", "char"), ("vocab_size", 4), ("min_freq", 0),
                       ("character_coverage", 0.5), ("max_size", 0)]:
        with pytest.raises(ConfigError, match=f"tokenizer.{key}="):
            TokenizerConfig(**{key: value})


# --- end to end: the model file travels with the checkpoint --------------------------------------


def run_cli(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def sp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sp")
    corpus = write_corpus(root / "corpus")
    run = root / "run"
    results = train(compose_cfg(tiny_overrides(corpus, "tokenizer=sentencepiece", "tokenizer.vocab_size=30",
                                               "train.max_steps=30", "eval.iw_samples=5")), run)
    return corpus, run, results


def test_sentencepiece_run_needs_no_cache_to_evaluate_sample_and_export(sp_run, tmp_path):
    corpus, run, results = sp_run
    model_file = next((corpus / "cache").glob("*.model")).read_bytes()
    shutil.rmtree(corpus / "cache")  # another machine: only the run directory and the text
    model, tokenizer, _ = load_model(run)
    assert isinstance(tokenizer, SentencePieceTokenizer) and tokenizer.proto == model_file
    assert model.decoder.proj.out_features == len(tokenizer) == 30

    test = results["test"]  # the PPL unit is words + <eos>, not pieces
    words = sum(len(s.split()) + 1 for s in (corpus / "ptb.test.txt").read_text().splitlines())
    assert test["tokens"] == words < test["model_tokens"]
    assert test["ppl_iw"] == pytest.approx(math.exp(test["nll_iw"] * test["sentences"] / words), rel=1e-9)

    proc = run_cli("vae_text.evaluate", f"checkpoint={run}", "iw_samples=5", "progress=false",
                   f"output={tmp_path}/eval.json")
    assert proc.returncode == 0, proc.stderr
    again = json.loads((tmp_path / "eval.json").read_text())
    for key in ("rec", "kl", "nll_iw", "ppl_iw", "tokens", "model_tokens"):
        assert again[key] == pytest.approx(test[key], rel=1e-6), key

    vae = TextVAEPipeline.from_pretrained(run, device="cpu")
    sentence = "the big cat sees the dog"
    assert len(vae.reconstruct([sentence])[0].split()) > 0
    assert all(isinstance(s, str) for s in vae.sample(3, decoding="sample", seed=0))
    folder = vae.save_pretrained(tmp_path / "export")
    assert (folder / "tokenizer.model").read_bytes() == model_file
    back = TextVAEPipeline.from_pretrained(folder, device="cpu")
    assert back.reconstruct([sentence]) == vae.reconstruct([sentence])

    other = build_tokenizer(SENTENCES, TokenizerConfig(kind="sentencepiece", vocab_size=30))
    (folder / "tokenizer.model").write_bytes(other.proto)  # same size, other pieces
    with pytest.raises(CheckpointError, match="tokenizer.model: its 30 pieces do not match vocab.json"):
        TextVAEPipeline.from_pretrained(folder, device="cpu")


def test_resume_with_another_tokenizer_is_refused(sp_run, tmp_path):
    corpus, run, _ = sp_run
    with pytest.raises(CheckpointError, match="resume with the same data and tokenizer"):
        train(compose_cfg(tiny_overrides(corpus, "tokenizer=sentencepiece", "tokenizer.vocab_size=30",
                                         "tokenizer.model_type=bpe", "train.max_steps=40",
                                         f"train.resume={run}")), tmp_path / "again")


def test_word_level_ppl_is_the_same_under_both_normalisations(corpus_dir, tmp_path):
    results = train(compose_cfg(tiny_overrides(corpus_dir, "train.max_steps=5", "eval.iw_samples=3")),
                    tmp_path / "run")
    test = results["test"]
    assert test["tokens"] == test["model_tokens"]
    assert test["ppl_iw"] == pytest.approx(math.exp(test["nll_iw"] * test["sentences"] / test["model_tokens"]), rel=1e-12)
