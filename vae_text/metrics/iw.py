"""The importance-weighted NLL (Burda et al. 2016), resumable (vae_text.metrics.progress).

A deterministic code (z = mu: the autoencoder) has no likelihood to bound: no IW-NLL for it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from vae_text.data.batches import Batch
from vae_text.metrics.base import BatchResult, Metric, Row, _exp, register, sentence_noise
from vae_text.metrics.progress import IWProgress, fingerprint
from vae_text.model.textvae import TextVAE


@torch.no_grad()
def iw_log_likelihood(model: TextVAE, batch: Batch, samples: int, seed: int,
                      memory_mb: float = 64) -> Tensor:
    """Importance-weighted estimate of log p(x) per sentence (B,), float64.

    log p(x) ~ logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K, z_k ~ q(z|x).
    The encoder runs once; all (sentence, sample) pairs go through the decoder in chunks whose
    logits fit in `memory_mb`.
    """
    q = model.encode(batch.tokens, batch.lengths)
    eps = sentence_noise(batch.tokens, batch.lengths, samples, q.noise_size, seed, "iw")  # (B, K, .)
    z = q.rsample(eps=eps.transpose(0, 1))  # (K, B, Z)
    log_prior = model.prior.log_prob(z).T  # (B, K)
    log_q = q.log_prob(z).T  # (B, K)

    B, T = batch.tokens.shape
    vocab = model.decoder.vocab_size
    rows_per_chunk = max(1, int(memory_mb * 2**20 / (3 * 4 * vocab * T)))  # logits + softmax work
    flat_z = z.transpose(0, 1).reshape(B * samples, -1)  # sentence-major: row b * K + k
    device = batch.tokens.device
    sentence = torch.arange(B, device=device).repeat_interleave(samples)
    log_px_z = torch.empty(B * samples, device=device)
    for start in range(0, B * samples, rows_per_chunk):
        rows = slice(start, start + rows_per_chunk)
        log_px_z[rows] = -model.reconstruction(batch.tokens[sentence[rows]], flat_z[rows])
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
        self.done = None
        if ctx.progress is not None:  # these settings decide the estimates: a file made with others is not reused
            self.done = IWProgress(ctx.progress, fingerprint(ctx.model, ctx.split, {
                "iw_samples": cfg.iw_samples, "seed": cfg.seed, "batch_size": cfg.batch_size,
                "memory_mb": cfg.memory_mb, "device": str(ctx.device), "rank": dist.rank,
                "world": dist.world}))

    def update(self, result: BatchResult) -> None:
        cfg, batch = self.ctx.cfg, result.batch
        iw = self.done.lookup(batch.index) if self.done is not None else None
        if iw is None:
            iw = iw_log_likelihood(self.ctx.model, batch, cfg.iw_samples, cfg.seed, cfg.memory_mb)
            if self.done is not None:
                self.done.add(batch.index, iw)
        self.nll -= iw.sum().cpu()

    def state(self) -> dict[str, Any]:
        return {"nll": self.nll}

    def finish(self, state: dict[str, Any]) -> dict[str, Any]:
        split = self.ctx.split
        return {"nll_iw": float(state["nll"] / len(split)), "ppl_iw": _exp(float(state["nll"] / split.num_words)),
                "iw_samples": self.ctx.cfg.iw_samples}
