"""Corpora: read sentence-per-line text, build the vocabulary, cache token ids, make batches.

Data flows one way: files -> `Corpus` (vocabulary + token ids per split, cached on disk) ->
length-grouped `Batch`es. A sentence is stored as its words followed by one <eos>; the decoder's
<bos> input is added by the model and never scored.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from vae_text.errors import DataError

log = logging.getLogger(__name__)

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPLITS = ("train", "valid", "test")
CACHE_VERSION = 1


@dataclass
class HubConfig:
    """Where to fetch the corpus with Hugging Face `datasets` when `dir` is missing (null: never)."""

    id: str
    config: str | None = None
    revision: str | None = None
    column: str = "text"
    splits: dict[str, str] = field(default_factory=lambda: {s: s for s in SPLITS})


@dataclass
class DataConfig:
    name: str = "ptb"
    dir: str = "data/ptb"
    cache_dir: str = "data/cache"
    files: dict[str, str] = field(default_factory=lambda: {s: f"ptb.{s}.txt" for s in SPLITS})
    hub: HubConfig | None = None
    max_vocab: int | None = None  # keep the most frequent words (specials not counted)
    min_freq: int = 1
    max_sentences: int | None = None  # use only the first N sentences of each split (smoke runs)
    bucket_pool: int = 100  # sort sentences by length within pools of this many batches

    def __post_init__(self) -> None:
        from vae_text.errors import ConfigError

        if isinstance(self.hub, dict):
            self.hub = HubConfig(**self.hub)
        if set(self.files) != set(SPLITS):
            raise ConfigError(f"data.files must name exactly the splits {list(SPLITS)}")
        for key in ("max_vocab", "max_sentences"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ConfigError(f"data.{key}={value!r} is invalid: a positive integer or null")
        if not isinstance(self.min_freq, int) or self.min_freq < 1:
            raise ConfigError(f"data.min_freq={self.min_freq!r} is invalid: an integer >= 1")
        if not isinstance(self.bucket_pool, int) or self.bucket_pool < 1:
            raise ConfigError(f"data.bucket_pool={self.bucket_pool!r} is invalid: an integer >= 1")


class Vocab:
    """Word <-> id. Ids 0..3 are <pad>, <bos>, <eos>, <unk>; then words by frequency."""

    def __init__(self, itos: Sequence[str]):
        if list(itos[:4]) != [PAD, BOS, EOS, UNK]:
            raise DataError(f"a vocabulary must start with {[PAD, BOS, EOS, UNK]}")
        self.itos = list(itos)
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = 0, 1, 2, 3

    @classmethod
    def build(cls, sentences: Sequence[Sequence[str]], max_size: int | None = None,
              min_freq: int = 1) -> Vocab:
        counts = collections.Counter(w for s in sentences for w in s)
        for special in (PAD, BOS, EOS, UNK):
            counts.pop(special, None)  # the corpus's own <unk> is our <unk>: no second one
        words = sorted((w for w, c in counts.items() if c >= min_freq),
                       key=lambda w: (-counts[w], w))
        return cls([PAD, BOS, EOS, UNK] + words[:max_size])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, words: Sequence[str]) -> list[int]:
        """Word ids of a sentence, followed by <eos>."""
        return [self.stoi.get(w, self.unk_id) for w in words] + [self.eos_id]

    def decode(self, ids: Sequence[int]) -> list[str]:
        """Words up to (not including) the first <eos>; <pad>/<bos> are dropped."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.bos_id):
                words.append(self.itos[i])
        return words


@dataclass
class Split:
    """One split as a flat id tensor: sentence i is ids[offsets[i]:offsets[i+1]] (ends in <eos>)."""

    ids: Tensor  # (total tokens,) int32
    offsets: Tensor  # (sentences + 1,) int64
    empty_lines: int = 0

    @property
    def lengths(self) -> Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_tokens(self) -> int:
        """Words + one <eos> per sentence: the PPL denominator."""
        return int(self.offsets[-1])

    def head(self, n: int) -> Split:
        n = min(n, len(self))
        return Split(self.ids[: int(self.offsets[n])], self.offsets[: n + 1], self.empty_lines)

    def sentence(self, i: int) -> list[int]:
        return self.ids[int(self.offsets[i]): int(self.offsets[i + 1])].tolist()


@dataclass
class Corpus:
    vocab: Vocab
    splits: dict[str, Split]

    def __getitem__(self, name: str) -> Split:
        return self.splits[name]


# --- reading ------------------------------------------------------------------------------------


def read_sentences(path: Path) -> tuple[list[list[str]], int]:
    """Whitespace-tokenized sentences of a UTF-8 file, one per line; empty lines are skipped and
    counted. A missing, unreadable, non-UTF-8 or empty file raises `DataError` naming it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (expected one sentence per line)") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read it ({err.strerror}); check its permissions") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte {raw[err.start]:#04x}); re-encode the file as UTF-8"
        ) from None
    sentences, empty = [], 0
    for line in text.splitlines():
        words = line.split()
        if words:
            sentences.append(words)
        else:
            empty += 1
    if not sentences:
        raise DataError(f"{path}: the file holds no sentences; it must have one sentence per line")
    return sentences, empty


def encode_split(sentences: Sequence[Sequence[str]], vocab: Vocab, empty: int = 0) -> Split:
    lengths = torch.tensor([len(s) + 1 for s in sentences], dtype=torch.int64)
    offsets = torch.zeros(len(sentences) + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=offsets[1:])
    ids = torch.tensor([i for s in sentences for i in vocab.encode(s)], dtype=torch.int32)
    return Split(ids, offsets, empty)


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
        atomic_write_text(directory / cfg.files[split], "".join(f" {line.strip()} \n" for line in lines))
    log.info("fetched %s from the Hugging Face hub into %s", hub.id, directory)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def load_corpus(cfg: DataConfig) -> Corpus:
    """Read (or fetch) the three splits, build the vocabulary from train, and cache the ids."""
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

    digest = hashlib.sha256(f"v{CACHE_VERSION} {cfg.max_vocab} {cfg.min_freq}".encode())
    for s in SPLITS:
        digest.update(hashlib.sha256(paths[s].read_bytes()).digest())
    cache = Path(cfg.cache_dir) / f"{cfg.name}-{digest.hexdigest()[:16]}.pt"

    corpus = _read_cache(cache)
    if corpus is None:
        read = {s: read_sentences(p) for s, p in paths.items()}
        vocab = Vocab.build(read["train"][0], cfg.max_vocab, cfg.min_freq)
        corpus = Corpus(vocab, {s: encode_split(sents, vocab, empty)
                                for s, (sents, empty) in read.items()})
        _write_cache(cache, corpus)
    for s, split in corpus.splits.items():
        if split.empty_lines:
            log.info("%s: skipped %d empty lines", paths[s], split.empty_lines)
    if cfg.max_sentences is not None:
        corpus = Corpus(corpus.vocab, {s: sp.head(cfg.max_sentences) for s, sp in corpus.splits.items()})
    return corpus


def _read_cache(path: Path) -> Corpus | None:
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, weights_only=True)
        return Corpus(Vocab(blob["itos"]), {s: Split(**blob["splits"][s]) for s in SPLITS})
    except Exception as err:  # a stale or truncated cache is rebuilt, never trusted
        log.warning("ignoring unreadable data cache %s (%s); re-tokenizing", path, err)
        return None


def _write_cache(path: Path, corpus: Corpus) -> None:
    blob = {"itos": corpus.vocab.itos,
            "splits": {s: {"ids": sp.ids, "offsets": sp.offsets, "empty_lines": sp.empty_lines}
                       for s, sp in corpus.splits.items()}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        torch.save(blob, tmp)
        os.replace(tmp, path)
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
