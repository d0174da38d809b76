"""Tokenizers: a closed word vocabulary, or sentencepiece subwords (unigram or BPE).

Both map a sentence, given as its whitespace-separated words, to ids ending in one <eos>, and map
ids back to words. Ids 0..3 are <pad>, <bos>, <eos>, <unk> in both, so the model never needs to know
which one it was trained with. A corpus's own `<unk>` word (PTB has one) is the unknown token, never
spelt out as characters. A tokenizer travels inside every checkpoint (`state()` /
`tokenizer_from_state`), so evaluation and sampling never depend on a cache.
"""

from __future__ import annotations

import collections
import io
import itertools
import logging
from collections.abc import Sequence

import torch

from vae_text.config import TokenizerConfig
from vae_text.core.errors import CheckpointError, ConfigError, DataError
from vae_text.core.utils import atomic_write

log = logging.getLogger(__name__)

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = [PAD, BOS, EOS, UNK]
WORD_BOUNDARY = "\u2581"  # sentencepiece's "▁": a piece that starts a word


class Vocab:
    """Word <-> id. Ids 0..3 are <pad>, <bos>, <eos>, <unk>; then words by frequency."""

    kind = "word"

    def __init__(self, itos: Sequence[str]):
        if list(itos[:4]) != SPECIALS:
            raise DataError(f"a vocabulary must start with {SPECIALS}")
        self.itos = list(itos)
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = 0, 1, 2, 3

    @classmethod
    def build(cls, sentences: Sequence[Sequence[str]], max_size: int | None = None,
              min_freq: int = 1) -> Vocab:
        counts = collections.Counter(w for s in sentences for w in s)
        for special in SPECIALS:
            counts.pop(special, None)  # the corpus's own <unk> is our <unk>: no second one
        words = sorted((w for w, c in counts.items() if c >= min_freq),
                       key=lambda w: (-counts[w], w))
        return cls(SPECIALS + words[:max_size])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, words: Sequence[str]) -> list[int]:
        """Word ids of a sentence, followed by <eos>."""
        return [self.stoi.get(w, self.unk_id) for w in words] + [self.eos_id]

    def encode_batch(self, sentences: Sequence[Sequence[str]]) -> list[list[int]]:
        """`encode` of every sentence (the protocol's bulk form, which the data module uses)."""
        get, unk, eos = self.stoi.get, self.unk_id, [self.eos_id]
        return [[get(w, unk) for w in s] + eos for s in sentences]

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

    def state(self) -> dict:
        return {"kind": self.kind}  # the words themselves are the checkpoint's "vocab"


class SentencePieceTokenizer:
    """Subwords from a sentencepiece model whose ids 0..3 are our specials.

    Words are encoded one by one (sentencepiece never lets a piece cross a space, so this equals
    encoding the sentence), which lets a literal `<unk>` word become the unknown id. So a batch
    of sentences needs each distinct word encoded once: `encode_batch` hands sentencepiece the
    distinct words in one call, which runs in C++ (PTB: 10k words for 42k sentences).
    """

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm

        try:
            self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        except RuntimeError as err:
            raise DataError(f"not a readable sentencepiece model ({str(err)[:120]})") from None
        self.proto = bytes(model_proto)
        self.itos = [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]
        if self.itos[:4] != SPECIALS:
            raise DataError(f"a sentencepiece model for vae_text must have ids 0..3 = {SPECIALS}, "
                            f"not {self.itos[:4]}; train it with vae_text (tokenizer=sentencepiece)")
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = 0, 1, 2, 3

    @classmethod
    def train(cls, sentences: Sequence[Sequence[str]], cfg: TokenizerConfig) -> SentencePieceTokenizer:
        import sentencepiece as spm

        lines = [" ".join(w for w in s if w != UNK) for s in sentences]
        buffer = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(line for line in lines if line), model_writer=buffer,
                vocab_size=cfg.vocab_size, model_type=cfg.model_type,
                character_coverage=float(cfg.character_coverage),
                pad_id=0, bos_id=1, eos_id=2, unk_id=3,
                pad_piece=PAD, bos_piece=BOS, eos_piece=EOS, unk_piece=UNK,
                num_threads=1,  # more threads give a (slightly) different model each time
                minloglevel=2)
        except RuntimeError as err:
            reason = str(err).strip().splitlines()[-1][:200]
            raise ConfigError(f"tokenizer: sentencepiece training failed on the train split ({reason}); "
                              f"adjust tokenizer.vocab_size or the other tokenizer.* settings") from None
        return cls(buffer.getvalue())

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, words: Sequence[str]) -> list[int]:
        """Piece ids of a sentence's words, followed by <eos>."""
        return self.encode_batch([words])[0]

    def encode_batch(self, sentences: Sequence[Sequence[str]]) -> list[list[int]]:
        """`encode` of every sentence, each distinct word through sentencepiece once."""
        distinct = [w for w in dict.fromkeys(w for s in sentences for w in s) if w != UNK]
        pieces = dict(zip(distinct, self.sp.encode(distinct))) if distinct else {}
        pieces[UNK] = [self.unk_id]
        piece_ids, eos = pieces.__getitem__, self.eos_id
        return [[*itertools.chain.from_iterable(map(piece_ids, s)), eos] for s in sentences]

    def decode(self, ids: Sequence[int]) -> list[str]:
        """Words up to (not including) the first <eos>; <pad>/<bos> are dropped, <unk> is a word."""
        text = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i == self.unk_id:
                text.append(f" {UNK} ")
            elif i not in (self.pad_id, self.bos_id):
                text.append(self.itos[i])
        return "".join(text).replace(WORD_BOUNDARY, " ").split()

    def state(self) -> dict:
        return {"kind": self.kind, "model": torch.frombuffer(bytearray(self.proto), dtype=torch.uint8)}

    def save(self, path) -> None:
        """The `.model` file sentencepiece's own tools read."""
        atomic_write(path, self.proto)


Tokenizer = Vocab | SentencePieceTokenizer


def build_tokenizer(sentences: Sequence[Sequence[str]], cfg: TokenizerConfig) -> Tokenizer:
    """A tokenizer fitted to the training sentences."""
    if cfg.kind == "word":
        return Vocab.build(sentences, cfg.max_size, cfg.min_freq)
    return SentencePieceTokenizer.train(sentences, cfg)


def tokenizer_from_state(itos: Sequence[str], state: dict | None, where: str) -> Tokenizer:
    """The tokenizer saved in a checkpoint (`vocab` = its pieces, `tokenizer` = `state()`).

    Checkpoints written before tokenizers existed have no state: they are word-level.
    """
    kind = (state or {}).get("kind", "word")
    if kind == "word":
        return Vocab(itos)
    if kind != "sentencepiece" or "model" not in state:
        raise CheckpointError(f"{where}: unknown tokenizer {kind!r} in this checkpoint")
    try:
        tokenizer = SentencePieceTokenizer(state["model"].numpy().tobytes())
    except DataError as err:
        raise CheckpointError(f"{where}: {err}") from None
    if tokenizer.itos != list(itos):
        raise CheckpointError(f"{where}: its sentencepiece model does not match its vocabulary "
                              f"({len(tokenizer)} vs {len(itos)} pieces); the checkpoint is inconsistent")
    return tokenizer
