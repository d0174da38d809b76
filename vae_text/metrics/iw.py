"""The importance-weighted NLL (Burda et al. 2016), resumable (vae_text.metrics.progress).

A deterministic code (z = mu: the autoencoder) has no likelihood to bound: no IW-NLL for it.

The (sentence, sample) rows go through the decoder in chunks sized from the device
(`chunk_budget_mb`). How well they fill it is reported: the decoder readout's FLOPs
(2 * hidden * vocab per scored token) over the decoder pass's wall time, against a plain
torch.matmul of the same (tokens, hidden) x (hidden, vocab) shape (`matmul_gflops`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vae_text.data.batches import Batch
from vae_text.metrics.base import BatchResult, Metric, Row, _exp, register, sentence_noise
from vae_text.metrics.progress import IWProgress, fingerprint
from vae_text.model.textvae import TextVAE

CPU_CHUNK_MB = 64  # on a CPU, chunks whose logits stay in cache: at 1 GB the pass is ~2x slower
GPU_FREE_SHARE = 0.25  # of the free GPU memory: the logits' share, the rest left to the LSTM and others


def chunk_budget_mb(memory_mb: float | None, device: torch.device) -> float:
    """The working memory of one decoder chunk: `memory_mb` when given; else, on CUDA, a share of
    the memory free now (so K = 500 runs many sentences at once), on a CPU the cache-sized rule."""
    if memory_mb is not None:
        return memory_mb
    if device.type == "cuda":  # rounded down to a power of two MiB: a resumed evaluation, which
        free, _ = torch.cuda.mem_get_info(device)  # finds a little more or less free, sizes alike
        return float(2 ** max(0, int(math.log2(max(GPU_FREE_SHARE * free / 2**20, 1.0)))))
    return CPU_CHUNK_MB


def chunk_rows(memory_mb: float, vocab: int, length: int) -> int:
    """(sentence, sample) rows per chunk: their float32 logits with the softmax's work (3 copies of
    (rows, length, vocab)) fit in `memory_mb`."""
    return max(1, int(memory_mb * 2**20 / (3 * 4 * vocab * length)))


@dataclass
class Readout:
    """What the decoder readout did in IW passes: its FLOPs, the passes' seconds, the largest chunk."""

    flops: float = 0.0
    seconds: float = 0.0
    tokens: int = 0  # scored tokens of the largest chunk: the bound's shape


def readout_width(model: TextVAE) -> int | None:
    """The readout's input width (the LSTM's hidden size, the Transformer's d_model); None for a
    decoder with neither."""
    decoder = model.decoder
    return getattr(decoder, "hidden", None) or getattr(decoder, "width", None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # kernels run asynchronously: time them finished
        torch.cuda.synchronize(device)


@torch.no_grad()
def matmul_gflops(rows: int, hidden: int, vocab: int, device: torch.device,
                  dtype: torch.dtype = torch.float32, seconds: float = 0.2) -> float:
    """GFLOP/s of torch.matmul (rows, hidden) x (hidden, vocab) on `device`: the bound the readout
    of that shape can reach. A warm-up, then rounds of 5 products until `seconds` have passed."""
    a = torch.randn(rows, hidden, device=device, dtype=dtype)
    b = torch.randn(hidden, vocab, device=device, dtype=dtype)
    out = torch.matmul(a, b)  # warm-up: allocation, kernel choice
    _sync(device)
    done, start = 0, time.perf_counter()
    while done == 0 or time.perf_counter() - start < seconds:
        for _ in range(5):
            torch.matmul(a, b, out=out)
        done += 5
        _sync(device)
    return 2 * rows * hidden * vocab * done / (time.perf_counter() - start) / 1e9


def readout_line(out: dict[str, Any]) -> str:
    """The figure printed at the end of an evaluation (from `IWNLL.finish`'s keys)."""
    share = 100 * out["readout_gflops"] / out["matmul_bound_gflops"]
    return (f"readout: {out['readout_gflops']:.1f} GFLOP/s, {share:.0f}% of the matmul bound "
            f"{out['matmul_bound_gflops']:.1f} GFLOP/s measured on the same shapes")


@torch.no_grad()
def iw_log_likelihood(model: TextVAE, batch: Batch, samples: int, seed: int,
                      memory_mb: float | None = None, readout: Readout | None = None) -> Tensor:
    """Importance-weighted estimate of log p(x) per sentence (B,), float64.

    log p(x) ~ logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K, z_k ~ q(z|x).
    The encoder runs once; all (sentence, sample) pairs go through the decoder in chunks whose
    logits fit in `memory_mb` (None: `chunk_budget_mb`). `readout` adds up the pass's readout work.
    """
    q = model.encode(batch.tokens, batch.lengths)
    eps = sentence_noise(batch.tokens, batch.lengths, samples, q.noise_size, seed, "iw")  # (B, K, .)
    z = q.rsample(eps=eps.transpose(0, 1))  # (K, B, Z)
    log_prior = model.prior.log_prob(z).T  # (B, K)
    log_q = q.log_prob(z).T  # (B, K)

    B, T = batch.tokens.shape
    vocab = model.decoder.vocab_size
    device = batch.tokens.device
    rows_per_chunk = chunk_rows(chunk_budget_mb(memory_mb, device), vocab, T)
    flat_z = z.transpose(0, 1).reshape(B * samples, -1)  # sentence-major: row b * K + k
    sentence = torch.arange(B, device=device).repeat_interleave(samples)
    log_px_z = torch.empty(B * samples, device=device)
    _sync(device)
    start_time = time.perf_counter()
    for start in range(0, B * samples, rows_per_chunk):
        rows = slice(start, start + rows_per_chunk)
        log_px_z[rows] = -model.reconstruction(batch.tokens[sentence[rows]], flat_z[rows])
    if readout is not None and (width := readout_width(model)):
        _sync(device)
        readout.seconds += time.perf_counter() - start_time
        scored = torch.tensor(batch.host_lengths).repeat_interleave(samples)  # (B * K,) tokens scored
        readout.flops += 2.0 * width * vocab * int(scored.sum())
        chunks = scored.split(rows_per_chunk)
        readout.tokens = max(readout.tokens, max(int(c.sum()) for c in chunks))
    log_w = log_px_z.view(B, samples).double() + log_prior.double() - log_q.double()
    return torch.logsumexp(log_w, dim=1) - math.log(samples)


@register
class IWNLL(Metric):
    """nll_iw, ppl_iw with K = `eval.iw_samples` (0 skips it); the estimates made so far are kept
    in `ctx.progress`, so an interrupted evaluation resumes with the same numbers."""

    name = "iw_nll"
    rows = (Row("nll_iw", "IW-NLL", ".2f", ("IW-NLL", ".2f")), Row("ppl_iw", "IW-PPL", ".2f", ("IW-PPL", ".1f")),
            Row("iw_samples", "IW samples K", "d", ("K", "d")))

    @classmethod
    def applies(cls, ctx) -> bool:
        return ctx.model.has_latent and not ctx.model.use_mean and ctx.cfg.iw_samples > 0

    def __init__(self, ctx):
        super().__init__(ctx)
        cfg, dist = ctx.cfg, ctx.dist
        self.progress = f"IW-NLL K={cfg.iw_samples}"
        self.nll = torch.zeros((), dtype=torch.float64)
        # sized once: the chunks, and so the last bits of the estimates, stay the same all through
        self.memory_mb = chunk_budget_mb(cfg.memory_mb, ctx.device)
        self.readout = Readout()
        self.done = None
        if ctx.progress is not None:  # these settings decide the estimates: a file made with others is not reused
            self.done = IWProgress(ctx.progress, fingerprint(ctx.model, ctx.split, {
                "iw_samples": cfg.iw_samples, "seed": cfg.seed, "batch_size": cfg.batch_size,
                "memory_mb": self.memory_mb, "device": str(ctx.device), "rank": dist.rank,
                "world": dist.world}))

    def update(self, result: BatchResult) -> None:
        cfg, batch = self.ctx.cfg, result.batch
        iw = self.done.lookup(batch.index) if self.done is not None else None
        if iw is None:
            iw = iw_log_likelihood(self.ctx.model, batch, cfg.iw_samples, cfg.seed, self.memory_mb, self.readout)
            if self.done is not None:
                self.done.add(batch.index, iw)
        self.nll -= iw.sum().cpu()

    def state(self) -> dict[str, Any]:
        return {"nll": self.nll}

    def finish(self, state: dict[str, Any]) -> dict[str, Any]:
        split = self.ctx.split
        return {"nll_iw": float(state["nll"] / len(split)), "ppl_iw": _exp(float(state["nll"] / split.num_words)),
                "iw_samples": self.ctx.cfg.iw_samples}

    def readout_figures(self) -> dict[str, float]:
        """readout_gflops and matmul_bound_gflops of this process's passes (none if all its
        estimates were resumed, K = 1, or the decoder has no known readout width): wall-clock
        figures that the suite adds beside its `seconds`, never part of the merged estimates."""
        done, width = self.readout, readout_width(self.ctx.model)
        if self.ctx.cfg.iw_samples < 2 or done.seconds == 0 or width is None:
            return {}
        dtype = next(self.ctx.model.decoder.parameters()).dtype
        bound = matmul_gflops(done.tokens, width, self.ctx.model.decoder.vocab_size, self.ctx.device, dtype)
        return {"readout_gflops": done.flops / done.seconds / 1e9, "matmul_bound_gflops": bound}
