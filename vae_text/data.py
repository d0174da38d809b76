"""Corpora: read sentence-per-line text, tokenize it, cache the ids, make batches.

Data flows one way: text (files in a folder, or a Hugging Face `datasets` dataset) -> `Corpus`
(tokenizer + ids per split, cached on disk) -> length-grouped `Batch`es. A sentence is stored as its
tokens followed by one <eos>; the decoder's <bos> input is added by the model and never scored.
Each split also keeps its sentences' word counts: perplexity is per word (+ <eos>) whatever the
tokenizer, so subword and word models are compared on one scale (docs/protocol.md).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from vae_text.config import MAX_LEN, SPLITS, DataConfig, HubConfig
from vae_text.errors import ConfigError, DataError
from vae_text.tokenizer import (
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
from vae_text.utils import atomic_write

__all__ = ["BOS", "EOS", "PAD", "UNK", "Vocab", "Tokenizer",  # re-exported for callers of data
           "SPLITS", "DataConfig", "HubConfig", "MAX_LEN"]

log = logging.getLogger(__name__)

CACHE_VERSION = 2
# Control characters (Unicode Cc) other than tab and the line ends \n and \r: a NUL byte or an escape
# code means a binary or corrupt file, never a word, and would otherwise train without complaint.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
PROGRESS_SECONDS = 10.0  # a data step that runs longer than this says how far it got


@dataclass
class Split:
    """One split as a flat id tensor: sentence i is ids[offsets[i]:offsets[i+1]] (ends in <eos>)."""

    ids: Tensor  # (total tokens,) int32
    offsets: Tensor  # (sentences + 1,) int64
    words: Tensor  # (sentences,) int64: words + 1 (<eos>) of each sentence, the PPL unit
    empty_lines: int = 0

    @property
    def lengths(self) -> Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_tokens(self) -> int:
        """Tokens the model predicts (<eos> included)."""
        return int(self.offsets[-1])

    @property
    def num_words(self) -> int:
        """Words + one <eos> per sentence: the PPL denominator (= num_tokens for words)."""
        return int(self.words.sum())

    def head(self, n: int) -> Split:
        n = min(n, len(self))
        return Split(self.ids[: int(self.offsets[n])], self.offsets[: n + 1], self.words[:n],
                     self.empty_lines)

    def sentence(self, i: int) -> list[int]:
        return self.ids[int(self.offsets[i]): int(self.offsets[i + 1])].tolist()

    def limit(self, max_len: int, mode: str) -> tuple[Split, int]:
        """Sentences over `max_len` tokens dropped, or truncated to max_len - 1 tokens + their <eos>;
        returns the new split and how many sentences that touched. Linear in the tokens (one
        mask over the flat ids), so a corpus with a huge line is cut as fast as any other."""
        lengths = self.lengths
        long = lengths > max_len
        n_long = int(long.sum())
        if not n_long:
            return self, 0
        if mode == "drop":
            keep = torch.repeat_interleave(~long, lengths)  # (total tokens,)
            lengths, words = lengths[~long], self.words[~long]
        else:  # the first max_len - 1 tokens and the last one, the <eos>
            # (total tokens,): each token's position in its sentence, and that sentence's length
            position = torch.arange(len(self.ids)) - torch.repeat_interleave(self.offsets[:-1], lengths)
            keep = (position < max_len - 1) | (position == torch.repeat_interleave(lengths, lengths) - 1)
            lengths, words = lengths.clamp(max=max_len), self.words
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=offsets[1:])
        return Split(self.ids[keep], offsets, words, self.empty_lines), n_long


def _from_ids(sentences: Sequence[Sequence[int]], words: Tensor, empty: int) -> Split:
    lengths = torch.tensor([len(s) for s in sentences], dtype=torch.int64)
    offsets = torch.zeros(len(sentences) + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=offsets[1:])
    ids = torch.tensor([i for s in sentences for i in s], dtype=torch.int32)
    return Split(ids, offsets, words, empty)


@dataclass
class Corpus:
    tokenizer: Tokenizer
    splits: dict[str, Split]

    def __getitem__(self, name: str) -> Split:
        return self.splits[name]


# --- reading ------------------------------------------------------------------------------------


def control_error(where: str, text: str, at: int) -> DataError:
    """The error for the control character at `text[at]`: `where` is "file:line" or "dataset row n"."""
    char = text[at]
    column = at - text.rfind("\n", 0, at)
    return DataError(f"{where}: control character U+{ord(char):04X} ({char!r}) at column {column}; "
                     f"a text corpus holds only printable characters, tabs and line breaks: "
                     f"remove it, or point data.dir/data.files at the right file if this one is binary")


def parse_lines(lines, where: str) -> tuple[list[list[str]], int]:
    """Whitespace-split sentences, one per line; empty lines are skipped and counted.
    No sentence at all, a row that is not text or a control character raises `DataError`
    naming `where` (and the row)."""
    sentences, empty = [], 0
    for row, line in enumerate(lines, 1):
        words = line.split() if isinstance(line, str) else None
        bad = words is not None and CONTROL.search(line)  # str.split() takes \x1c-\x1f for spaces
        if bad:
            raise control_error(f"{where} row {row}", line, bad.start())
        if words:
            sentences.append(words)
        elif words is None:
            raise DataError(f"{where}: holds a {type(line).__name__} where a line of text belongs; "
                            f"choose a text column (data.column)")
        else:
            empty += 1
    if not sentences:
        reason = f"only {empty} empty lines" if empty else "it is empty"
        raise DataError(f"{where}: holds no sentences ({reason}); it must have one sentence per line")
    return sentences, empty


def read_sentences(path: Path) -> tuple[list[list[str]], int]:
    """Sentences of a UTF-8 file, one per line (see `parse_lines`). A missing, unreadable,
    non-UTF-8 or empty file, or one with a control character, raises `DataError` naming it
    (and the line). Linear in the file's size: a 1 MB line reads in a fraction of a second."""
    path = Path(path)
    raw = file_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte {raw[err.start]:#04x}); re-encode the file as UTF-8"
        ) from None
    # before splitting: str.splitlines() would silently take \x0b, \x0c, \x1c-\x1e, \x85 for line ends
    bad = CONTROL.search(text)
    if bad:
        raise control_error(f"{path}:{text.count(chr(10), 0, bad.start()) + 1}", text, bad.start())
    return parse_lines(text.splitlines(), str(path))


def file_bytes(path: Path) -> bytes:
    """A file's bytes; a missing or unreadable file raises `DataError` naming it and the fix."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (expected one sentence per line); "
                        f"check data.dir and data.files") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a text file; point data.files at the file "
                        f"with one sentence per line") from None
    except PermissionError:
        raise DataError(f"{path}: cannot read it (permission denied); check its permissions") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read it ({err.strerror or err}); check the file and its "
                        f"permissions") from None


def encode_split(sentences: Sequence[Sequence[str]], tokenizer: Tokenizer, empty: int = 0,
                 label: str = "") -> Split:
    """Every sentence's ids (none is ever dropped: evaluation relies on it). A split that takes
    longer than PROGRESS_SECONDS logs how far it got, so a huge corpus is never silent."""
    words = torch.tensor([len(s) + 1 for s in sentences], dtype=torch.int64)
    ids, start = [], time.monotonic()
    last = start
    for i, sentence in enumerate(sentences):
        ids.append(tokenizer.encode(sentence))
        if i % 1000 == 999 and time.monotonic() - last > PROGRESS_SECONDS:
            last = time.monotonic()
            log.info("%s: tokenized %d of %d sentences (%.0f s)", label or "data", i + 1,
                     len(sentences), last - start)
    return _from_ids(ids, words, empty)


def fetch_from_hub(cfg: DataConfig, directory: Path) -> None:
    """Write the corpus's split files into `directory` from the Hugging Face hub."""
    hub = cfg.hub
    fix = (f"put {', '.join(cfg.files[s] for s in SPLITS)} in {directory} "
           f"(or set data.dir=<folder with them>), or go online so `datasets` can fetch {hub.id}")
    try:
        import datasets

        ds = datasets.load_dataset(hub.id, data_dir=hub.config, revision=hub.revision)
        tables = {split: ds[hub.splits[split]][hub.column] for split in SPLITS}
    except Exception as err:  # offline, unknown id, missing split or column: all the same fix
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise DataError(f"data directory {directory} is missing and fetching {hub.id} from the "
                        f"Hugging Face hub failed ({reason}); fix: {fix}") from None
    directory.mkdir(parents=True, exist_ok=True)
    for split, lines in tables.items():
        atomic_write(directory / cfg.files[split], "".join(f" {line.strip()} \n" for line in lines))
    log.info("fetched %s from the Hugging Face hub into %s", hub.id, directory)


def load_hf_lines(cfg: DataConfig) -> dict[str, tuple[list, str]]:
    """Each split's `cfg.column` of a `datasets` dataset, with a label for error messages.

    `datasets` keeps its own cache (HF_DATASETS_CACHE) and honours HF_HUB_OFFLINE=1; local files
    load with `data.name=text data.data_files={train: ..., valid: ..., test: ...}`.
    """
    fix = "check data.name/config/data_dir/revision, or go online (HF_HUB_OFFLINE unset) once to cache it"
    try:
        import datasets

        ds = datasets.load_dataset(cfg.name, cfg.config, data_dir=cfg.data_dir,
                                   data_files=dict(cfg.data_files) if cfg.data_files else None,
                                   revision=cfg.revision)
    except Exception as err:  # offline and not cached, unknown id or config, unreadable files
        while err.__cause__ is not None:  # `datasets` wraps the useful error (e.g. UnicodeDecodeError)
            err = err.__cause__
        reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err).strip() else ''}"
        raise DataError(f"data.name={cfg.name}: loading it with `datasets` failed ({reason}); {fix}") from None
    out = {}
    for split in SPLITS:
        name = cfg.splits[split]
        if name not in ds:
            raise DataError(f"data.splits.{split}={name!r}: {cfg.name} has no such split (it has "
                            f"{sorted(ds)}); set data.splits.{split}=<one of them>")
        if cfg.column not in ds[name].column_names:
            raise DataError(f"data.column={cfg.column!r}: {cfg.name} split {name!r} has no such column "
                            f"(it has {ds[name].column_names}); set data.column=<one of them>")
        out[split] = (ds[name][cfg.column], f"{cfg.name}[{name}][{cfg.column}]")
    return out


def split_files(cfg: DataConfig) -> dict[str, Path]:
    """The three files of a `source=files` corpus, fetched from the hub first if configured."""
    directory = Path(cfg.dir)
    if not directory.is_dir():
        if cfg.hub is None:
            raise DataError(f"data directory {directory.resolve()} does not exist; put "
                            f"{', '.join(cfg.files.values())} there or set data.dir=<folder>")
        fetch_from_hub(cfg, directory)
    paths = {s: directory / cfg.files[s] for s in SPLITS}
    for split, path in paths.items():
        if not path.is_file():
            raise DataError(f"{path}: file not found; the {split} split must be there "
                            f"(or set data.files.{split}=<file name>)")
    return paths


def read_split(cfg: DataConfig, split: str) -> tuple[list[list[str]], int, str]:
    """One split's sentences, empty-line count and a label naming where it came from."""
    if cfg.source == "hf":
        lines, where = load_hf_lines(cfg)[split]
        return (*parse_lines(lines, where), where)
    if cfg.hub is not None and not Path(cfg.dir).is_dir():
        fetch_from_hub(cfg, Path(cfg.dir))
    path = Path(cfg.dir) / cfg.files[split]
    return (*read_sentences(path), str(path))


def load_corpus(cfg: DataConfig, tokenizer_cfg: TokenizerConfig | None = None) -> Corpus:
    """Read (or fetch) the three splits, fit the tokenizer on train, and cache the ids.

    The cache key is the tokenizer settings plus the text's checksum, so a second start neither
    re-trains a sentencepiece model nor re-tokenizes. `max_sentences` and `max_len` apply after
    (so the ids, and the vocabulary, do not depend on them).
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
            digest.update(hashlib.sha256(file_bytes(paths[s])).digest())
        read = lambda: {s: (*read_sentences(p), str(p)) for s, p in paths.items()}  # noqa: E731
    stem = Path(cfg.cache_dir) / f"{cfg.name.replace('/', '--')}-{digest.hexdigest()[:16]}"

    corpus = _read_cache(stem.with_suffix(".pt"))
    if corpus is None:
        start = time.monotonic()
        log.info("data %s: reading and tokenizing (no cache yet for this text and tokenizer)", cfg.name)
        text = read()
        tokenizer = _fit_tokenizer(text["train"][0], tokenizer_cfg, stem.with_suffix(".model"))
        corpus = Corpus(tokenizer, {s: encode_split(sents, tokenizer, empty, f"{s} split ({where})")
                                    for s, (sents, empty, where) in text.items()})
        _write_cache(stem.with_suffix(".pt"), corpus)
        log.info("data %s: %s sentences tokenized in %.1f s", cfg.name,
                 "/".join(str(len(corpus[s])) for s in SPLITS), time.monotonic() - start)
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
    tokenizer = build_tokenizer(train, cfg)
    if cfg.kind == "sentencepiece":
        log.info("trained a sentencepiece %s model of %d pieces on %d sentences",
                 cfg.model_type, len(tokenizer), len(train))
        try:
            tokenizer.save(model_path)
        except OSError as err:
            log.warning("could not write %s (%s)", model_path, err)
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
    except OSError as err:  # a read-only cache dir costs speed, not correctness
        log.warning("could not write data cache %s (%s)", path, err)


# --- batching -----------------------------------------------------------------------------------


@dataclass
class Batch:
    tokens: Tensor  # (B, T) words + <eos>, right-padded with <pad>
    lengths: Tensor  # (B,) tokens per sentence, <eos> included
    index: Tensor  # (B,) position of each sentence in its split

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.tokens.to(device, non_blocking=True),
                     self.lengths.to(device, non_blocking=True), self.index)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())


def batch_plan(split: Split, batch_size: int, shuffle: bool, seed: int = 0, epoch: int = 0,
               pool: int = 100) -> list[Tensor]:
    """Sentence indices of each batch, grouped by length so padding is small.

    Evaluation (`shuffle=False`): sorted by length. Training: a permutation drawn from
    (seed, epoch) alone, sorted by length within pools of `pool` batches, then the batches
    shuffled; so a resumed run can rebuild an epoch's plan and skip what it has done.
    """
    lengths = split.lengths
    if not shuffle:
        order = torch.argsort(lengths, stable=True)
        return list(order.split(batch_size))
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(len(split), generator=g)
    batches = []
    for chunk in perm.split(batch_size * pool):
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches.extend(chunk.split(batch_size))
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in order]


def collate(split: Split, index: Tensor, pad_id: int = 0) -> Batch:
    lengths = split.lengths[index]
    starts = split.offsets[index]
    steps = torch.arange(int(lengths.max()))
    mask = steps < lengths[:, None]
    positions = torch.where(mask, starts[:, None] + steps, 0)
    tokens = torch.where(mask, split.ids[positions].long(), pad_id)
    return Batch(tokens, lengths, index)


def iterate(split: Split, plan: Sequence[Tensor], start: int = 0) -> Iterator[Batch]:
    for index in plan[start:]:
        yield collate(split, index)
