from pathlib import Path

import pytest
import torch

from conftest import make_sentences, write_corpus
from vae_text.data import (
    BOS,
    EOS,
    PAD,
    UNK,
    DataConfig,
    HubConfig,
    Vocab,
    batch_plan,
    collate,
    encode_split,
    iterate,
    load_corpus,
    read_sentences,
)
from vae_text.errors import DataError


def config(directory: Path, **kw) -> DataConfig:
    return DataConfig(dir=str(directory), cache_dir=str(directory / "cache"), **kw)


def test_vocab_specials_frequency_order_and_no_second_unk():
    sents = [["b", "a", "<unk>"], ["a", "c", "<unk>", "<unk>"]]
    vocab = Vocab.build(sents)
    assert vocab.itos == [PAD, BOS, EOS, UNK, "a", "b", "c"]
    assert vocab.encode(["c", "zzz", "<unk>"]) == [6, 3, 3, 2]
    assert vocab.decode([1, 4, 5, 0, 2, 6]) == ["a", "b"]  # skips <bos>/<pad>, stops at <eos>
    assert len(Vocab.build(sents, max_size=2)) == 6
    assert Vocab.build(sents, min_freq=2).itos[4:] == ["a"]


def test_read_sentences_skips_and_counts_empty_lines(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text(" a b \n\n   \n c \n")
    assert read_sentences(path) == ([["a", "b"], ["c"]], 2)


def test_non_utf8_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine line\nsecond\nthird \xff\xfe bad\n")
    with pytest.raises(DataError, match=r"bad\.txt:3: not valid UTF-8"):
        read_sentences(path)


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n \n")
    with pytest.raises(DataError, match="empty.txt: the file holds no sentences"):
        read_sentences(path)


def test_missing_directory_without_hub(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_corpus(config(tmp_path / "nowhere"))


def test_missing_split_file_names_it(corpus_dir):
    (corpus_dir / "ptb.valid.txt").unlink()
    with pytest.raises(DataError, match=r"ptb\.valid\.txt: file not found"):
        load_corpus(config(corpus_dir))


def test_missing_directory_offline_hub_gives_one_line_with_both_fixes(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    hub = HubConfig(id="ptb-text-only/ptb_text_only", config="penn_treebank",
                    revision="refs/convert/parquet", column="sentence")
    target = tmp_path / "ptb"
    with pytest.raises(DataError) as err:
        load_corpus(config(target, hub=hub))
    message = str(err.value)
    assert "\n" not in message
    assert str(target) in message and "data.dir=" in message and "ptb-text-only" in message
    assert not target.exists()  # nothing half-written


def test_corpus_ids_match_text_and_cache_is_reused(corpus_dir, monkeypatch):
    corpus = load_corpus(config(corpus_dir))
    train = make_sentences(120, 0)
    assert len(corpus["train"]) == 120
    assert corpus.vocab.decode(corpus["train"].sentence(5)) == train[5].split()
    assert corpus["train"].num_tokens == sum(len(s.split()) + 1 for s in train)
    assert len(list((corpus_dir / "cache").glob("*.pt"))) == 1

    def fail(*_):
        raise AssertionError("re-tokenized although the cache was valid")

    monkeypatch.setattr("vae_text.data.read_sentences", fail)
    again = load_corpus(config(corpus_dir))
    assert again.vocab.itos == corpus.vocab.itos
    assert torch.equal(again["test"].ids, corpus["test"].ids)
    # a changed file changes the key: the cache is not trusted
    (corpus_dir / "ptb.test.txt").write_text(" the cat \n")
    with pytest.raises(AssertionError, match="re-tokenized"):
        load_corpus(config(corpus_dir))


def test_corrupt_cache_is_rebuilt(corpus_dir):
    load_corpus(config(corpus_dir))
    cache = next((corpus_dir / "cache").glob("*.pt"))
    cache.write_bytes(b"garbage")
    assert len(load_corpus(config(corpus_dir))["valid"]) == 30


def test_max_sentences_keeps_the_full_vocabulary(corpus_dir):
    full = load_corpus(config(corpus_dir))
    head = load_corpus(config(corpus_dir, max_sentences=9))
    assert [len(head[s]) for s in ("train", "valid", "test")] == [9, 9, 9]
    assert head.vocab.itos == full.vocab.itos
    assert torch.equal(head["train"].ids, full["train"].ids[: head["train"].num_tokens])


def _split(lengths):
    vocab = Vocab([PAD, BOS, EOS, UNK, "w"])
    return encode_split([["w"] * (n - 1) for n in lengths], vocab)


def test_training_plan_covers_each_sentence_once_and_groups_lengths():
    lengths = torch.randint(2, 60, (1000,), generator=torch.Generator().manual_seed(1)).tolist()
    split = _split(lengths)
    plan = batch_plan(split, batch_size=13, shuffle=True, seed=3, epoch=2, pool=10)
    assert sorted(torch.cat(plan).tolist()) == list(range(1000))
    tokens = sum(split.lengths[b].sum() for b in plan)
    padded = sum(len(b) * split.lengths[b].max() for b in plan)
    assert padded / tokens < 1.10  # length grouping keeps padding under 10 %
    ungrouped = torch.randperm(1000, generator=torch.Generator().manual_seed(0)).split(13)
    assert sum(len(b) * split.lengths[b].max() for b in ungrouped) / tokens > 1.4
    same = batch_plan(split, 13, shuffle=True, seed=3, epoch=2, pool=10)
    other = batch_plan(split, 13, shuffle=True, seed=3, epoch=3, pool=10)
    assert all(torch.equal(a, b) for a, b in zip(plan, same))
    assert not all(torch.equal(a, b) for a, b in zip(plan, other))


def test_collate_pads_with_pad_and_keeps_eos():
    vocab = Vocab([PAD, BOS, EOS, UNK, "a", "b"])
    split = encode_split([["a", "b", "a"], ["b"]], vocab)
    batch = collate(split, torch.tensor([1, 0]))
    assert batch.tokens.tolist() == [[5, 2, 0, 0], [4, 5, 4, 2]]
    assert batch.lengths.tolist() == [2, 4] and batch.num_tokens == 6
    eval_plan = batch_plan(split, 1, shuffle=False)
    assert [b.index.tolist() for b in iterate(split, eval_plan)] == [[1], [0]]
    assert [b.index.tolist() for b in iterate(split, eval_plan, start=1)] == [[0]]


def test_tiny_corpus_vocabulary_size(corpus_dir):
    # the sizes in conftest.TINY assume 24 entries (4 specials + 20 words)
    assert len(load_corpus(config(corpus_dir)).vocab) == 24


@pytest.mark.slow
def test_ptb_vocabulary_and_token_counts(ptb_dir, ptb_cache):
    corpus = load_corpus(DataConfig(dir=str(ptb_dir), cache_dir=str(ptb_cache)))
    vocab = corpus.vocab
    assert len(vocab) == 10_002  # the 10,000 PTB types (<unk> and <eos> included) + <pad>, <bos>
    assert vocab.itos.count(UNK) == 1 and "<unk>" in vocab.stoi
    assert [len(corpus[s]) for s in ("train", "valid", "test")] == [42_068, 3_370, 3_761]
    assert [corpus[s].num_tokens for s in ("train", "valid", "test")] == [929_589, 73_760, 82_430]
    for s in ("valid", "test"):  # no out-of-vocabulary words besides PTB's own <unk>
        assert (corpus[s].ids == vocab.unk_id).sum() == {"valid": 3_485, "test": 4_794}[s]
    assert corpus["train"].empty_lines == 0


def test_write_corpus_helper_is_deterministic(tmp_path):
    a, b = write_corpus(tmp_path / "a"), write_corpus(tmp_path / "b")
    assert (a / "ptb.train.txt").read_text() == (b / "ptb.train.txt").read_text()
