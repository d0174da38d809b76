"""The training forward pass as the step calls it: eager, compiled, or captured as CUDA graphs
(`train.compile`: none | compile | cudagraphs).

Only the model's forward (or its DDP wrapper's) is compiled. The objective stays eager: it is a
few reductions over (B,) and (B, Z) tensors, and its `reduce` sums statistics over the ranks (a
collective), which would split a graph anyway.

The step's noise (z's eps and the word-dropout draws) comes in from the host, drawn from the step's
noise seed, so a compiled and an eager step see the same noise. Dropout inside the model draws from
torch's generator, as in eager: inductor's own RNG (the default) would draw other masks, and a
compiled run would no longer give the eager run's losses (`fallback_random`).

`cudagraphs` replays a graph per input shape, so shapes must repeat: each batch's time axis is
padded up to the next of a handful of bucket lengths (quantiles of the training lengths). Padding
is <pad> tokens past every sentence's length, which the encoder (packed, or masked attention) and
the loss (masked by length) never read; its word-dropout noise is 1, never a dropout. The inputs'
shapes are marked static, so there is one graph per (batch size, bucket): BUCKETS times the few
batch sizes (full batches and an epoch's last) stays under dynamo's recompile limit (8). The part
after the decoder sees only the real tokens (their number varies with every batch): it is compiled
with a dynamic size and not captured (`cudagraph_skip_dynamic_graphs`). The LSTMs, and the
selection of real tokens, are left to eager by dynamo (graph breaks); they run between the graphs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_text.core.errors import ConfigError

COMPILE_MODES = ("none", "compile", "cudagraphs")
BUCKETS = 3  # captured graphs per batch size: few enough to capture fast, enough to pad little
# eager dropout masks in compiled code (see the docstring); for cudagraphs also the capture itself
COMPILE_OPTIONS = {"fallback_random": True}


def check_compile(mode: str, device: torch.device) -> None:
    if mode == "cudagraphs" and device.type != "cuda":
        raise ConfigError(f"train.compile=cudagraphs needs a CUDA device, not {device.type}: "
                          f"use train.compile=compile (or none) there")


def bucket_lengths(lengths: Tensor, n: int = BUCKETS) -> tuple[int, ...]:
    """n padded lengths for sentence lengths `lengths` (tokens, <eos> included): the q-quantiles
    q = 1/n ... 1, so each bucket holds about as many sentences and the last fits the longest."""
    q = torch.arange(1, n + 1, dtype=torch.float64) / n
    edges = torch.quantile(lengths.double(), q, interpolation="higher").long()
    return tuple(sorted(set(edges.tolist())))


def pad_to_bucket(tokens: Tensor, word_noise: Tensor | None, buckets: tuple[int, ...],
                  pad_id: int) -> tuple[Tensor, Tensor | None]:
    """tokens (B, T) and word noise (B, >= T) padded to (B, L), L the first bucket >= T (T itself
    past the last bucket: a sentence longer than any trained on, e.g. without data.max_len)."""
    T = tokens.shape[1]
    L = next((b for b in buckets if b >= T), T)
    tokens = F.pad(tokens, (0, L - T), value=pad_id)
    if word_noise is not None:
        word_noise = F.pad(word_noise[:, :L], (0, L - min(L, word_noise.shape[1])), value=1.0)
    return tokens, word_noise


class StepForward:
    """`net(tokens, lengths, eps=, word_noise=)` as the training step runs it under `mode`."""

    def __init__(self, net: nn.Module, mode: str, pad_id: int, buckets: tuple[int, ...] = ()):
        self.mode, self.pad_id, self.buckets = mode, pad_id, buckets
        if mode == "none":
            self.net = net
        elif mode == "compile":  # one graph for every batch shape: B and T vary from batch to batch
            self.net = torch.compile(net, dynamic=True, options=COMPILE_OPTIONS)
        else:  # "reduce-overhead" is triton.cudagraphs: a CUDA graph per shape (B, bucket)
            self.net = torch.compile(net, options={**COMPILE_OPTIONS, "triton.cudagraphs": True,
                                                   "triton.cudagraph_skip_dynamic_graphs": True})

    def __call__(self, tokens: Tensor, lengths: Tensor, eps: Tensor | None,
                 word_noise: Tensor | None):
        if self.mode == "cudagraphs":
            tokens, word_noise = pad_to_bucket(tokens, word_noise, self.buckets, self.pad_id)
            for t in (tokens, lengths, eps, word_noise):  # (B, bucket): never a dynamic graph
                if t is not None:
                    torch._dynamo.mark_static(t)
            # a new training iteration: the previous step's graph outputs (read by its backward
            # and the objective by now) may be overwritten; a remedy's inner steps count as steps
            torch.compiler.cudagraph_mark_step_begin()
        return self.net(tokens, lengths, eps=eps, word_noise=word_noise)


def step_forward(net: nn.Module, mode: str, device: torch.device, pad_id: int,
                 train_lengths: Tensor) -> StepForward:
    """The forward of train.compile=`mode` on `device`, buckets from the training lengths."""
    check_compile(mode, device)
    return StepForward(net, mode, pad_id,
                       bucket_lengths(train_lengths) if mode == "cudagraphs" else ())
