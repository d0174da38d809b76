"""Batches: a split as one flat id tensor, length-grouped batch plans, padded batches.

A sentence is stored as its tokens followed by one <eos>; the decoder's <bos> input is added by the
model and never scored. Each split also keeps its sentences' word counts: perplexity is per word
(+ <eos>) whatever the tokenizer, so subword and word models are compared on one scale.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


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
    ids = torch.tensor(list(itertools.chain.from_iterable(sentences)), dtype=torch.int32)
    return Split(ids, offsets, words, empty)


@dataclass
class Batch:
    tokens: Tensor  # (B, T) words + <eos>, right-padded with <pad>
    lengths: Tensor  # (B,) tokens per sentence, <eos> included
    index: Tensor  # (B,) position of each sentence in its split
    # the lengths as Python ints, taken while the batch is still on the host: the step's shapes
    # and token counts come from here, so that it never reads a device tensor back for them
    host_lengths: tuple[int, ...] = ()

    def __post_init__(self):
        if not self.host_lengths:
            self.host_lengths = tuple(self.lengths.tolist())

    def to(self, device: torch.device | str) -> Batch:
        return Batch(to_device(self.tokens, device), to_device(self.lengths, device), self.index,
                     self.host_lengths)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def num_tokens(self) -> int:
        return sum(self.host_lengths)

    def max_len(self, rows: slice = slice(None)) -> int:
        """The longest sentence among `rows`: the padded width of their share."""
        return max(self.host_lengths[rows])


def to_device(t: Tensor, device: torch.device | str) -> Tensor:
    """`t` on `device`; from the host to CUDA through pinned memory, so the copy is asynchronous
    (from pageable memory it would make the host wait for it)."""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


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
    host_lengths = tuple(lengths.tolist())  # (B,) on the host: the split lives there
    steps = torch.arange(max(host_lengths))
    mask = steps < lengths[:, None]
    positions = torch.where(mask, starts[:, None] + steps, 0)
    tokens = torch.where(mask, split.ids[positions].long(), pad_id)
    return Batch(tokens, lengths, index, host_lengths)


def iterate(split: Split, plan: Sequence[Tensor], start: int = 0,
            device: torch.device | str = "cpu") -> Iterator[Batch]:
    """The batches of `plan` from its `start`-th; on CUDA each is made and its copy queued (pinned,
    asynchronous) while the step before it runs, so the step never waits for its data."""
    batches = (collate(split, index) for index in plan[start:])
    if torch.device(device).type != "cuda":
        yield from batches
        return
    ahead = None
    for batch in batches:
        batch = batch.to(device)
        if ahead is not None:
            yield ahead
        ahead = batch
    if ahead is not None:
        yield ahead

