"""How much the code says about the sentence: mutual information I(x; z) and active units.

MI under q(x, z) = p_data(x) q(z|x) (Hoffman & Johnson 2016), with q(z) = (1/N) sum_j q(z|x_j)
the aggregate posterior over the N sentences of the WHOLE set (Li et al. 2019; Optimus, Li et al.
2020), not of a minibatch (He et al. 2019's code; the two are not comparable):

    I = E_x E_{z ~ q(z|x)} [log q(z|x) - log q(z)],  one z_i ~ q(z|x_i) per sentence.

Both terms are taken at the same sample z_i. The first written as the closed-form -entropy (He
et al. 2019's code) has the same expectation, but its noise no longer cancels the second term's:
for a diagonal Gaussian the two differ by sum_u (eps_u^2 - 1) / 2 per sentence, sd sqrt(Z / 2)
(~0.25 nats in the mean over 200 PTB sentences at Z = 32). At the same sample an encoder that
ignores x gives exactly 0, and the estimate never exceeds log N (the j = i term is in the sum).

Active units (Burda et al. 2016): dimensions u with Var_x(E_q(z|x)[z_u]) >= a threshold.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from vae_text.metrics.base import BatchResult, Metric, Row, register, sentence_noise
from vae_text.model.latent import Posterior

MI_ESTIMATOR = "aggregate posterior over the whole evaluation set (Li et al. 2019 / Optimus)"
# said beside a negative MI wherever one is shown: the true MI is >= 0, its estimate is not
MI_BELOW_ZERO = "an estimate: a value a little below 0 is sampling noise around 0, i.e. no information in z"


def mi_note(mi: float | None) -> str:
    """` (<MI_BELOW_ZERO>)` after a negative MI, else nothing."""
    return f" ({MI_BELOW_ZERO})" if mi is not None and mi < 0 else ""


def mi_chunk(n: int, latent: int, device: torch.device) -> int:
    """Rows of `mutual_information`'s pairs at a time: 512 on a CPU; on CUDA as many as a quarter
    of the free memory holds, each row's (N, Z) float64 log-density work taken 4 times."""
    if device.type != "cuda":
        return 512
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(n, int(free / 4 / (4 * n * latent * 8))))


def mutual_information(q: Posterior, z: Tensor, chunk: int = 512) -> float:
    """I(x; z) = mean_i [log q(z_i|x_i) - log (1/N) sum_j q(z_i|x_j)], in float64.

    q: the posteriors of the N sentences (one object, e.g. `Posterior.cat` of the batches);
    z: (N, Z), one sample from each. log q(z_i|x_j) for every pair, `chunk` rows at a time.
    """
    q, z = q.map(torch.Tensor.double), z.double()
    n = len(q)
    own = torch.empty(n, dtype=torch.float64, device=z.device)
    log_qz = torch.empty(n, dtype=torch.float64, device=z.device)
    for start in range(0, n, chunk):
        pairs = q.log_prob(z[start: start + chunk, None]).double()  # (c, N): log q(z_i | x_j)
        rows = torch.arange(len(pairs), device=pairs.device)
        own[start: start + chunk] = pairs[rows, start + rows]
        log_qz[start: start + chunk] = torch.logsumexp(pairs, dim=1) - math.log(n)
    return float((own - log_qz).mean())


def active_units(mu: Tensor, threshold: float = 0.01) -> tuple[int, list[float]]:
    """Number of dimensions u with Var_x(E_q(z|x)[z_u]) >= threshold, and those variances."""
    variances = mu.double().var(dim=0, unbiased=True) if mu.shape[0] > 1 else mu.new_zeros(mu.shape[1])
    return int((variances >= threshold).sum()), variances.tolist()


def kept_on(ctx) -> torch.device:
    """Where a metric keeps its per-sentence tensors: on the GPU of a one-process evaluation (no
    copy per batch, the N x N pairs there); on the CPU otherwise, as the states of several
    processes are gathered as Python objects."""
    return ctx.device if ctx.device.type == "cuda" and ctx.dist.world == 1 else torch.device("cpu")


@register
class MutualInformation(Metric):
    """mi over the whole split (or a seeded subset of `eval.mi_max_sentences`, said by
    mi_sentences: an MI over fewer sentences is capped lower and not comparable)."""

    name = "mi"
    rows = (Row("mi", "MI (whole set)", ".3f", ("MI", ".2f")),)

    @classmethod
    def applies(cls, ctx) -> bool:
        return ctx.model.has_latent

    def __init__(self, ctx):
        super().__init__(ctx)
        self.posteriors, self.z, self.order = [], [], []  # order: each sentence's place in the split
        self.keep = kept_on(ctx)

    def update(self, result: BatchResult) -> None:
        batch, q = result.batch, result.q
        eps = sentence_noise(batch.tokens, batch.lengths, 1, q.noise_size, self.ctx.cfg.seed, "mi")[:, 0]
        self.posteriors.append(q.to(self.keep))
        self.z.append(q.rsample(eps=eps).to(self.keep))
        self.order.append(batch.index.cpu())

    def state(self) -> dict[str, Any]:
        return {"posteriors": self.posteriors, "z": self.z, "order": self.order}

    def finish(self, state: dict[str, Any]) -> dict[str, Any]:
        cap = self.ctx.cfg.mi_max_sentences
        device = self.ctx.device if self.ctx.device.type == "cuda" else torch.device("cpu")
        q = type(state["posteriors"][0]).cat([p.to(device) for p in state["posteriors"]])
        z = torch.cat(state["z"]).to(device)
        n = len(z)
        if cap is not None and n > cap:  # a seeded subset of the split's sentences, whatever the batches and ranks
            chosen = torch.randperm(n, generator=torch.Generator().manual_seed(self.ctx.cfg.seed))[:cap]
            row_of = torch.empty(n, dtype=torch.long)
            row_of[torch.cat(state["order"])] = torch.arange(n)  # split position -> row of q
            rows = row_of[chosen.sort().values].to(device)
            q, z = q.index(rows), z[rows]
        mi = mutual_information(q, z, mi_chunk(len(z), z.shape[1], device))
        return {"mi": mi, "mi_sentences": len(z), "mi_estimator": MI_ESTIMATOR}

    @classmethod
    def table(cls, out: dict[str, Any]) -> list[tuple[str, str]]:
        if "mi" not in out:
            return []
        whole = out["mi_sentences"] == out.get("sentences", out["mi_sentences"])
        label = cls.rows[0].label if whole else f"MI ({out['mi_sentences']} sentences: not comparable)"
        return [(label + mi_note(out["mi"]), f"{out['mi']:.3f}")]


@register
class ActiveUnits(Metric):
    """au: units whose posterior mean varies over the split by at least `eval.au_threshold`."""

    name = "au"
    rows = (Row("au", "active units", "d", ("AU", "d")),)

    @classmethod
    def applies(cls, ctx) -> bool:
        return ctx.model.has_latent

    def __init__(self, ctx):
        super().__init__(ctx)
        self.means = []
        self.keep = kept_on(ctx)

    def update(self, result: BatchResult) -> None:
        self.means.append(result.mean.to(self.keep))

    def state(self) -> dict[str, Any]:
        return {"means": self.means}

    def finish(self, state: dict[str, Any]) -> dict[str, Any]:
        au, variances = active_units(torch.cat(state["means"]), self.ctx.cfg.au_threshold)
        return {"au": au, "au_threshold": self.ctx.cfg.au_threshold, "au_variances": variances}

    @classmethod
    def table(cls, out: dict[str, Any]) -> list[tuple[str, str]]:
        rows = super().table(out)
        return rows + [("latent size", str(len(out["au_variances"])))] if "au_variances" in out else rows
