import os
import re
import time
from pathlib import Path

import pytest
import torch

from conftest import compose_cfg, make_sentences, write_corpus
from vae_text.core.errors import ConfigError, DataError
from vae_text.data.corpus import (
    BOS,
    EOS,
    MAX_LEN,
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
    parse_lines,
    read_sentences,
    read_split,
)
from vae_text.data.tokenizer import TokenizerConfig


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
    with pytest.raises(DataError, match="empty.txt: holds no sentences"):
        read_sentences(path)


def test_missing_directory_without_hub(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_corpus(config(tmp_path / "nowhere", hub=None))


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
    assert corpus.tokenizer.decode(corpus["train"].sentence(5)) == train[5].split()
    assert corpus["train"].num_tokens == sum(len(s.split()) + 1 for s in train)
    assert len(list((corpus_dir / "cache").glob("*.pt"))) == 1

    def fail(*_):
        raise AssertionError("re-tokenized although the cache was valid")

    monkeypatch.setattr("vae_text.data.corpus.read_sentences", fail)
    again = load_corpus(config(corpus_dir))
    assert again.tokenizer.itos == corpus.tokenizer.itos
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
    assert head.tokenizer.itos == full.tokenizer.itos
    assert torch.equal(head["train"].ids, full["train"].ids[: head["train"].num_tokens])


def test_max_sentences_without_a_cache_tokenizes_only_the_head_and_caches_nothing(corpus_dir, monkeypatch):
    from vae_text.data.tokenizer import Vocab

    seen = []
    encode_batch = Vocab.encode_batch
    monkeypatch.setattr(Vocab, "encode_batch", lambda self, s: seen.append(len(s)) or encode_batch(self, s))
    head = load_corpus(config(corpus_dir, max_sentences=9))
    assert seen == [9, 9, 9] and not list((corpus_dir / "cache").glob("*.pt"))
    full = load_corpus(config(corpus_dir))  # the cache of the whole splits (120, 30, 37)
    assert seen[3:] == [120, 30, 37] and len(list((corpus_dir / "cache").glob("*.pt"))) == 1
    assert head.tokenizer.itos == full.tokenizer.itos
    for s in ("train", "valid", "test"):
        assert torch.equal(head[s].ids, full[s].ids[: head[s].num_tokens])
        assert torch.equal(head[s].words, full[s].words[:9])


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
    assert len(load_corpus(config(corpus_dir)).tokenizer) == 24


@pytest.mark.slow
def test_ptb_vocabulary_and_token_counts(ptb_dir, ptb_cache):
    corpus = load_corpus(DataConfig(dir=str(ptb_dir), cache_dir=str(ptb_cache)))
    vocab = corpus.tokenizer
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


# --- any corpus: text folders, `datasets`, sentencepiece, max_len --------------------------------


def text_folder(tmp_path: Path) -> Path:
    folder = write_corpus(tmp_path / "text", prefix="")
    with (folder / "train.txt").open("a") as f:
        f.write("\n  \nthe <unk> chases the zebra\n")  # empty lines and a literal <unk>
    return folder


def hf_config(folder: Path, **kw) -> DataConfig:
    files = {s: str(folder / f"{s}.txt") for s in ("train", "valid", "test")}
    return DataConfig(source="hf", name="text", data_files=files, splits={s: s for s in files},
                      cache_dir=str(folder / "hf_cache"), **kw)


@pytest.mark.parametrize("tokenizer", [TokenizerConfig(), TokenizerConfig(kind="sentencepiece", vocab_size=40)])
def test_text_folder_and_datasets_give_identical_batches(tmp_path, tokenizer):
    folder = text_folder(tmp_path)
    files = load_corpus(DataConfig(name="text", dir=str(folder), hub=None, cache_dir=str(folder / "cache"),
                                   files={s: f"{s}.txt" for s in ("train", "valid", "test")}), tokenizer)
    hf = load_corpus(hf_config(folder), tokenizer)
    assert files.tokenizer.itos == hf.tokenizer.itos
    assert files["train"].empty_lines == hf["train"].empty_lines == 2
    for split in ("train", "valid", "test"):
        a, b = files[split], hf[split]
        assert torch.equal(a.words, b.words)
        for x, y in zip(iterate(a, batch_plan(a, 7, True, seed=3)), iterate(b, batch_plan(b, 7, True, seed=3))):
            assert torch.equal(x.tokens, y.tokens) and torch.equal(x.index, y.index)


def test_words_count_the_ppl_unit_whatever_the_tokenizer(tmp_path):
    folder = text_folder(tmp_path)
    train_words = sum(len(line.split()) + 1 for line in (folder / "train.txt").read_text().splitlines()
                      if line.split())
    word = load_corpus(hf_config(folder))
    sub = load_corpus(hf_config(folder), TokenizerConfig(kind="sentencepiece", vocab_size=40))
    assert word["train"].num_words == word["train"].num_tokens == train_words
    assert sub["train"].num_words == train_words < sub["train"].num_tokens


def test_sentencepiece_model_is_trained_once_and_cached_by_its_settings(tmp_path, monkeypatch):
    folder = text_folder(tmp_path)
    cfg = hf_config(folder)
    sp40 = TokenizerConfig(kind="sentencepiece", vocab_size=40)
    first = load_corpus(cfg, sp40)
    models = list(Path(cfg.cache_dir).glob("*.model"))
    assert len(models) == 1 and models[0].read_bytes() == first.tokenizer.proto
    for cache in Path(cfg.cache_dir).glob("*.pt"):
        cache.unlink()  # ids gone: re-tokenized with the cached model, not a new one

    def no_training(*_):
        raise AssertionError("sentencepiece trained again")

    monkeypatch.setattr("vae_text.data.tokenizer.SentencePieceTokenizer.train", no_training)
    assert load_corpus(cfg, sp40).tokenizer.proto == first.tokenizer.proto
    with pytest.raises(AssertionError, match="trained again"):  # other settings: another model
        load_corpus(cfg, TokenizerConfig(kind="sentencepiece", vocab_size=41))


def test_datasets_source_errors(tmp_path):
    folder = text_folder(tmp_path)
    with pytest.raises(DataError, match=r"data.column='sentence': text split 'train' has no such column"):
        load_corpus(hf_config(folder, column="sentence"))
    cfg = hf_config(folder)
    cfg.splits = {"train": "train", "valid": "validation", "test": "test"}
    with pytest.raises(DataError, match=r"data.splits.valid='validation': text has no such split"):
        load_corpus(cfg)
    (folder / "valid.txt").write_text("\n\n")
    with pytest.raises(DataError, match=r"text\[valid\]\[text\]: holds no sentences"):
        load_corpus(hf_config(folder))
    (folder / "valid.txt").write_bytes(b"the cat \xff\n")
    with pytest.raises(DataError, match="data.name=text: loading it with `datasets` failed.*UnicodeDecodeError"):
        load_corpus(hf_config(folder))
    with pytest.raises(DataError, match="data.name=no-such/dataset-here"):
        load_corpus(DataConfig(source="hf", name="no-such/dataset-here", cache_dir=str(tmp_path / "c")))


def test_max_len_drops_or_truncates_training_sentences_only(corpus_dir, caplog):
    full = load_corpus(config(corpus_dir))
    n_long = int((full["train"].lengths > 8).sum())
    assert 0 < n_long < len(full["train"])
    with caplog.at_level("INFO"):
        dropped = load_corpus(config(corpus_dir, max_len=8))
    assert f"dropped {n_long} sentences longer than data.max_len=8" in caplog.text
    assert len(dropped["train"]) == len(full["train"]) - n_long and dropped["train"].lengths.max() <= 8
    cut = load_corpus(config(corpus_dir, max_len=8, long="truncate"))
    assert len(cut["train"]) == len(full["train"]) and cut["train"].lengths.max() == 8
    i = int(torch.nonzero(full["train"].lengths > 8)[0])
    assert cut["train"].sentence(i) == full["train"].sentence(i)[:7] + [full.tokenizer.eos_id]
    for split in ("valid", "test"):  # evaluation never loses a sentence
        assert torch.equal(cut[split].ids, full[split].ids) and torch.equal(dropped[split].ids, full[split].ids)


# --- hardening: huge lines, control characters, unreadable files --------------------------------


def test_default_max_len_is_200_in_code_and_every_data_config():
    assert DataConfig().max_len == MAX_LEN == 200
    for name in ("ptb", "text", "hf"):
        cfg = compose_cfg([f"data={name}", "data.name=x", "data.dir=y"])
        assert cfg.data.max_len == 200, name


def huge_line(n_words: int = 170_000) -> str:
    """Over 1 MB: n_words words drawn from 50 types (word0 ... word49), one line."""
    return " ".join(f"word{i % 50}" for i in range(n_words))


def test_one_megabyte_line_is_dropped_from_training_and_logged(corpus_dir, caplog):
    line = huge_line()
    assert len(line) > 2**20
    with (corpus_dir / "ptb.train.txt").open("a") as f:
        f.write(line + "\n")
    with (corpus_dir / "ptb.valid.txt").open("a") as f:
        f.write(" the cat " + " sees the dog" * 70 + "\n")  # 212 words: over the cap, but evaluation
    start = time.monotonic()
    with caplog.at_level("INFO"):
        corpus = load_corpus(config(corpus_dir))  # the default cap
    assert time.monotonic() - start < 60  # seconds in fact; a hang or a quadratic step would not be
    assert ("train split: dropped 1 sentences longer than data.max_len=200 tokens "
            "(the longest has 170001)") in caplog.text
    assert "valid split: 1 sentences are longer than data.max_len=200 tokens (the longest has 213)" \
        in caplog.text
    assert len(corpus["train"]) == 120 and int(corpus["train"].lengths.max()) <= 14
    assert len(corpus["valid"]) == 31 and corpus["valid"].sentence(30)[-1] == corpus.tokenizer.eos_id
    assert corpus["valid"].lengths[30] == 213  # evaluation keeps every sentence whole
    sentences, _, _ = read_split(config(corpus_dir), "train")  # what evaluate.py reads: all of it
    split = encode_split(sentences, corpus.tokenizer)
    assert len(split) == 121 and int(split.lengths[120]) == 170_001
    assert corpus.tokenizer.decode(split.sentence(120)) == line.split()
    uncapped = load_corpus(config(corpus_dir, max_len=None))  # null: no cap
    assert len(uncapped["train"]) == 121 and torch.equal(uncapped["train"].ids, split.ids)


def test_limit_matches_a_sentence_by_sentence_cut():
    lengths = [3, 9, 2, 12, 5, 9, 10]
    vocab = Vocab([PAD, BOS, EOS, UNK, "a", "b", "c"])
    sents = [[["a", "b", "c"][(i + j) % 3] for j in range(n - 1)] for i, n in enumerate(lengths)]
    split = encode_split(sents, vocab)
    dropped, n = split.limit(9, "drop")
    assert n == 2 and [dropped.sentence(i) for i in range(len(dropped))] == \
        [split.sentence(i) for i in (0, 1, 2, 4, 5)]
    assert dropped.words.tolist() == [3, 9, 2, 5, 9]
    cut, n = split.limit(9, "truncate")
    assert n == 2 and cut.lengths.tolist() == [3, 9, 2, 9, 5, 9, 9]
    assert [cut.sentence(i) for i in range(7)] == \
        [s if len(s) <= 9 else s[:8] + [vocab.eos_id] for s in (split.sentence(i) for i in range(7))]
    assert torch.equal(cut.words, split.words)  # the PPL unit still counts the whole sentence
    assert split.limit(12, "drop") == (split, 0)


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f", "\x85"])
def test_control_characters_are_rejected_naming_file_and_line(tmp_path, char):
    path = tmp_path / "ctl.txt"
    path.write_text(f"a fine line\nthe\tcat sits\nthe d{char}og\n", encoding="utf-8")
    code = re.escape(f"U+{ord(char):04X}")
    with pytest.raises(DataError, match=rf"ctl\.txt:3: control character {code} .* at column 6; .*remove it"):
        read_sentences(path)


def test_nul_corpus_does_not_train(corpus_dir):
    (corpus_dir / "ptb.train.txt").write_bytes(b"\x00" * 5000)
    with pytest.raises(DataError, match=r"ptb\.train\.txt:1: control character U\+0000"):
        load_corpus(config(corpus_dir))


def test_tabs_and_windows_line_ends_are_text(tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"the\tcat sits\r\n\r\nthe dog\r\n")
    assert read_sentences(path) == ([["the", "cat", "sits"], ["the", "dog"]], 1)


def test_datasets_rows_with_control_characters_are_rejected_naming_the_row():
    with pytest.raises(DataError, match=r"corpus\[train\] row 2: control character U\+001F"):
        parse_lines(["the cat", "the\x1fdog"], "corpus[train]")  # str.split() takes \x1f for a space


def test_file_errors_are_one_line_naming_the_file_and_the_fix(tmp_path):
    cases = {
        "missing.txt": r"missing\.txt: file not found .*check data\.dir and data\.files",
        "folder": r"folder: is a directory, not a text file; point data\.files at",
        "zero.txt": r"zero\.txt: holds no sentences \(it is empty\); it must have one sentence per line",
        "blank.txt": r"blank\.txt: holds no sentences \(only 2 empty lines\)",
        "latin1.txt": r"latin1\.txt:2: not valid UTF-8 \(byte 0xe9\); re-encode the file as UTF-8",
    }
    (tmp_path / "folder").mkdir()
    (tmp_path / "zero.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_bytes(b"  \n\t\n")
    (tmp_path / "latin1.txt").write_bytes("the cat\ncaf\u00e9 au lait\n".encode("latin-1"))
    for name, pattern in cases.items():
        with pytest.raises(DataError, match=pattern) as err:
            read_sentences(tmp_path / name)
        assert "\n" not in str(err.value) and str(tmp_path / name) in str(err.value)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_names_it_and_the_fix(corpus_dir):
    path = corpus_dir / "ptb.train.txt"
    path.chmod(0)
    try:
        with pytest.raises(DataError, match=r"ptb\.train\.txt: cannot read it \(permission denied\); "
                                            r"check its permissions"):
            load_corpus(config(corpus_dir))
    finally:
        path.chmod(0o644)


def test_a_cap_that_drops_every_training_sentence_names_the_file(corpus_dir):
    shortest = int(load_corpus(config(corpus_dir, max_len=None))["train"].lengths.min())
    with pytest.raises(ConfigError, match=rf"data\.max_len=2 drops every training sentence of "
                                          rf".*ptb\.train\.txt \(the shortest has {shortest} tokens\); "
                                          rf"raise it, or set data\.long=truncate"):
        load_corpus(config(corpus_dir, max_len=2))
