"""Corpora: read text (vae_text.data.text), tokenize it, cache the ids, hand out splits (vae_text.data.batches).

Data flows one way: text (files in a folder, or a Hugging Face `datasets` dataset) -> `Corpus`
(tokenizer + ids per split, cached on disk) -> length-grouped `Batch`es.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from vae_text.config import MAX_LEN, SPLITS, DataConfig, HubConfig
from vae_text.core.errors import ConfigError, DataError, OutputError
from vae_text.core.utils import atomic_write, write_error
from vae_text.data.batches import Batch, Split, _from_ids, batch_plan, collate, iterate
from vae_text.data.text import (
    CONTROL,
    PROGRESS_SECONDS,
    control_error,
    fetch_from_hub,
    file_bytes,
    file_sha256,
    load_hf_lines,
    parse_lines,
    read_sentences,
    read_split,
    split_files,
)
from vae_text.data.tokenizer import (
    BOS,
    EOS,
    PAD,
    UNK,
    SentencePieceTokenizer,
    Tokenizer,
    TokenizerConfig,
    Vocab,
    build_tokenizer,
    tokenizer_from_state,
)

__all__ = ["BOS", "EOS", "PAD", "UNK", "Vocab", "Tokenizer",  # re-exported for callers of data
           "SPLITS", "DataConfig", "HubConfig", "MAX_LEN", "Batch", "Split", "batch_plan",
           "collate", "iterate", "CONTROL", "control_error", "fetch_from_hub", "file_bytes",
           "load_hf_lines", "parse_lines", "read_sentences", "read_split", "split_files"]

log = logging.getLogger("vae_text.data")  # the package's logger, as the log lines name it

CACHE_VERSION = 3  # 3: lines end at \n, \r\n or \r only, and a byte-order mark opening one is dropped
CHUNK = 20_000  # sentences per `encode_batch` call: a huge split still reports its progress


@dataclass
class Corpus:
    tokenizer: Tokenizer
    splits: dict[str, Split]

    def __getitem__(self, name: str) -> Split:
        return self.splits[name]


def encode_split(sentences: Sequence[Sequence[str]], tokenizer: Tokenizer, empty: int = 0,
                 label: str = "") -> Split:
    """Every sentence's ids (none is ever dropped: evaluation relies on it). A split that takes
    longer than PROGRESS_SECONDS logs how far it got, so a huge corpus is never silent."""
    words = torch.tensor([len(s) + 1 for s in sentences], dtype=torch.int64)
    ids, start = [], time.monotonic()
    last = start
    for i in range(0, len(sentences), CHUNK):
        ids.extend(tokenizer.encode_batch(sentences[i: i + CHUNK]))
        if time.monotonic() - last > PROGRESS_SECONDS and len(ids) < len(sentences):
            last = time.monotonic()
            log.info("%s: tokenized %d of %d sentences (%.0f s)", label or "data", len(ids),
                     len(sentences), last - start)
    return _from_ids(ids, words, empty)



def load_corpus(cfg: DataConfig, tokenizer_cfg: TokenizerConfig | None = None) -> Corpus:
    """Read (or fetch) the three splits, fit the tokenizer on train, and cache the ids.

    The cache key is the tokenizer settings plus the text's checksum, so a second start neither
    re-trains a sentencepiece model nor re-tokenizes. The tokenizer is fitted on the whole train
    split and `max_len` applies after tokenizing, so neither the ids nor the vocabulary depend on
    `max_sentences` or `max_len`; without a cache only the first `max_sentences` are tokenized.
    """
    tokenizer_cfg = tokenizer_cfg or TokenizerConfig()
    digest = hashlib.sha256(f"v{CACHE_VERSION} {tokenizer_cfg.key()}".encode())
    if cfg.source == "hf":
        raw = load_hf_lines(cfg)
        for s in SPLITS:
            digest.update(hashlib.sha256("\n".join(map(str, raw[s][0])).encode()).digest())
        read = lambda: {s: (*parse_lines(lines, where), where) for s, (lines, where) in raw.items()}  # noqa: E731
    else:
        paths = split_files(cfg)
        for s in SPLITS:
            digest.update(bytes.fromhex(file_sha256(paths[s])))
        read = lambda: {s: (*read_sentences(p), str(p)) for s, p in paths.items()}  # noqa: E731
    stem = Path(cfg.cache_dir) / f"{cfg.name.replace('/', '--')}-{digest.hexdigest()[:16]}"

    corpus = _read_cache(stem.with_suffix(".pt"))
    if corpus is None:
        log.info("data %s: reading and tokenizing (no cache yet for this text and tokenizer)", cfg.name)
        text = read()
        tokenizer = _fit_tokenizer(text["train"][0], tokenizer_cfg, stem.with_suffix(".model"))
        # the first max_sentences of each split are all that is used: only they are tokenized,
        # and such a corpus is not cached (the cache holds whole splits, whatever max_sentences)
        head = slice(cfg.max_sentences)
        start = time.monotonic()
        corpus = Corpus(tokenizer, {s: encode_split(sents[head], tokenizer, empty, f"{s} split ({where})")
                                    for s, (sents, empty, where) in text.items()})
        if cfg.max_sentences is None:
            _write_cache(stem.with_suffix(".pt"), corpus)
        log.info("data %s: %s sentences tokenized in %.1f s%s", cfg.name,
                 "/".join(str(len(corpus[s])) for s in SPLITS), time.monotonic() - start,
                 "" if cfg.max_sentences is None else " (data.max_sentences: not cached)")
    for s, split in corpus.splits.items():
        if split.empty_lines:
            log.info("%s split: skipped %d empty lines", s, split.empty_lines)
    if cfg.max_sentences is not None:
        corpus = Corpus(corpus.tokenizer, {s: sp.head(cfg.max_sentences) for s, sp in corpus.splits.items()})
    if cfg.max_len is not None:  # training only: evaluation never loses a sentence
        longest = int(corpus["train"].lengths.max())
        train, n_long = corpus["train"].limit(cfg.max_len, cfg.long)
        if n_long:
            log.info("train split: %s %d sentences longer than data.max_len=%d tokens (the longest "
                     "has %d); evaluation keeps every sentence; set data.max_len=<tokens> or null "
                     "to train on them whole", {"drop": "dropped", "truncate": "truncated"}[cfg.long],
                     n_long, cfg.max_len, longest)
            if not len(train):
                where = (Path(cfg.dir) / cfg.files["train"] if cfg.source == "files"
                         else f"{cfg.name}[{cfg.splits['train']}][{cfg.column}]")
                raise ConfigError(f"data.max_len={cfg.max_len} drops every training sentence of "
                                  f"{where} (the shortest has {int(corpus['train'].lengths.min())} "
                                  f"tokens); raise it, or set data.long=truncate")
        corpus = Corpus(corpus.tokenizer, {**corpus.splits, "train": train})
        for s in SPLITS[1:]:
            n_long = int((corpus[s].lengths > cfg.max_len).sum())
            if n_long:
                log.warning("%s split: %d sentences are longer than data.max_len=%d tokens (the "
                            "longest has %d); evaluation keeps them, so their batches are slow and large",
                            s, n_long, cfg.max_len, int(corpus[s].lengths.max()))
    return corpus


def _fit_tokenizer(train: Sequence[Sequence[str]], cfg: TokenizerConfig, model_path: Path) -> Tokenizer:
    """A word vocabulary, or a sentencepiece model trained once and kept at `model_path`."""
    if cfg.kind == "sentencepiece" and model_path.is_file():
        try:
            return SentencePieceTokenizer(model_path.read_bytes())
        except (OSError, DataError) as err:
            log.warning("ignoring unreadable sentencepiece model %s (%s); training it again", model_path, err)
    start = time.monotonic()
    tokenizer = build_tokenizer(train, cfg)
    if cfg.kind == "sentencepiece":
        log.info("trained a sentencepiece %s model of %d pieces on %d sentences in %.1f s",
                 cfg.model_type, len(tokenizer), len(train), time.monotonic() - start)
        try:
            tokenizer.save(model_path)
        except (OSError, OutputError) as err:
            _cache_not_written(model_path, err)
    return tokenizer


def _read_cache(path: Path) -> Corpus | None:
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, weights_only=True)
        tokenizer = tokenizer_from_state(blob["itos"], blob["tokenizer"], str(path))
        return Corpus(tokenizer, {s: Split(**blob["splits"][s]) for s in SPLITS})
    except Exception as err:  # a stale or truncated cache is rebuilt, never trusted
        log.warning("ignoring unreadable data cache %s (%s); re-tokenizing", path, err)
        return None


def _write_cache(path: Path, corpus: Corpus) -> None:
    blob = {"itos": corpus.tokenizer.itos, "tokenizer": corpus.tokenizer.state(),
            "splits": {s: {"ids": sp.ids, "offsets": sp.offsets, "words": sp.words,
                           "empty_lines": sp.empty_lines}
                       for s, sp in corpus.splits.items()}}
    try:
        atomic_write(path, lambda f: torch.save(blob, f))
    except (OSError, OutputError) as err:
        _cache_not_written(path, err)


def _cache_not_written(path: Path, err: OSError | OutputError) -> None:
    """A cache that cannot be written (read-only, a full disk, a file where its folder goes) costs
    the next start its tokenizing, never this run: one warning line, and training goes on."""
    reason = err if isinstance(err, OutputError) else write_error(path, err)
    log.warning("data cache not written: %s; training goes on without it (the next start "
                "tokenizes again; set data.cache_dir=<a writable folder> to keep one)", reason)


# --- batching -----------------------------------------------------------------------------------

