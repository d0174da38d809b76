"""The ELBO's terms over a split, and the reconstruction at z = the posterior mean.

NLLs are nats per sentence (sum over its words and one <eos>), averaged over sentences; PPL divides
the total NLL by the total number of words (+ one <eos> per sentence), whatever the tokenizer. The
ELBO is computed with beta = 1, whatever weight the KL had in training; its PPL, `ppl_elbo`,
bounds the true perplexity from above. A language model's decoder NLL is its exact NLL.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vae_text.data.batches import Batch
from vae_text.metrics.base import BatchResult, Metric, Row, _exp, register, sentence_noise
from vae_text.model.latent import Posterior, kl_term
from vae_text.model.textvae import TextVAE


@torch.no_grad()
def batch_elbo(model: TextVAE, batch: Batch, seed: int) -> tuple[Tensor, Tensor, Posterior | None]:
    """rec (B,), KL (B, Z) per dimension (or (B, 1), see `latent.kl_term`) and q(z|x) for one
    batch; one posterior sample per sentence (z = its mean for a model trained without sampling)."""
    if not model.has_latent:
        rec = model.reconstruction(batch.tokens, None)
        return rec, rec.new_zeros(len(batch), 0), None
    q = model.encode(batch.tokens, batch.lengths)
    if model.use_mean:
        z = q.mean
    else:
        z = q.rsample(eps=sentence_noise(batch.tokens, batch.lengths, 1, q.noise_size, seed, "elbo")[:, 0])
    rec = model.reconstruction(batch.tokens, z)
    return rec, kl_term(q, model.prior, z), q


@register
class ElboTerms(Metric):
    """rec, KL, -ELBO and its PPL (and KL per dimension where it splits); for a language model
    also the exact NLL and PPL."""

    name = "elbo"
    rows = (Row("rec", "rec (nats/sentence)", ".2f", ("rec", ".2f")), Row("kl", "KL", ".2f", ("KL", ".2f")),
            Row("neg_elbo", "-ELBO (beta=1)", ".2f", ("-ELBO", ".2f")),
            Row("ppl_elbo", "PPL from -ELBO (bound)", ".2f"),
            Row("nll", "NLL (exact)", ".2f", ("NLL (exact)", ".2f")),
            Row("ppl", "PPL (exact)", ".2f", ("PPL (exact)", ".1f")))

    def __init__(self, ctx):
        super().__init__(ctx)
        self.rec = torch.zeros((), dtype=torch.float64)
        self.kl = torch.zeros((), dtype=torch.float64)  # becomes (Z,) or (1,): see latent.kl_term

    def update(self, result: BatchResult) -> None:
        self.rec += result.rec.double().sum().cpu()
        self.kl = self.kl + result.kl.double().sum(0).cpu()

    def state(self) -> dict[str, Any]:
        return {"rec": self.rec, "kl": self.kl}

    def finish(self, state: dict[str, Any]) -> dict[str, Any]:
        model, split = self.ctx.model, self.ctx.split
        n, words = len(split), split.num_words
        rec, kl = state["rec"], state["kl"].sum()
        out = {"rec": float(rec / n), "kl": float(kl / n), "neg_elbo": float((rec + kl) / n),
               "ppl_elbo": _exp(float((rec + kl) / words))}
        if not model.has_latent:  # no latent: the decoder's NLL is the exact log-likelihood
            out.update(nll=out["rec"], ppl=_exp(float(rec / words)), nll_estimator="exact")
        elif state["kl"].numel() == model.latent_size:  # the KL has a closed form per dimension
            out["kl_per_dim"] = (state["kl"] / n).tolist()
        return out


@register
class RecAtMean(Metric):
    """-log p(x | z = E_q[z]) per sentence: what the decoder makes of the code itself, without the
    posterior's noise (rec averages over it). rec_mean well below rec: the decoder uses z, but the
    posterior is wide; rec_mean close to a language model's NLL: the decoder ignores z."""

    name = "rec_mean"
    rows = (Row("rec_mean", "rec at z = mean (nats/sentence)", ".2f", ("rec@μ", ".2f")),)

    @classmethod
    def applies(cls, ctx) -> bool:
        return ctx.model.has_latent

    def __init__(self, ctx):
        super().__init__(ctx)
        self.rec = torch.zeros((), dtype=torch.float64)

    @torch.no_grad()
    def update(self, result: BatchResult) -> None:
        rec = self.ctx.model.reconstruction(result.batch.tokens, result.mean)
        self.rec += rec.double().sum().cpu()

    def state(self) -> dict[str, Any]:
        return {"rec": self.rec}

    def finish(self, state: dict[str, Any]) -> dict[str, Any]:
        return {"rec_mean": float(state["rec"] / len(self.ctx.split))}
