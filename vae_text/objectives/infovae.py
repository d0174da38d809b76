"""InfoVAE (Zhao, Song & Ermon 2019 "InfoVAE: balancing learning and inference in variational
autoencoders", AAAI), with the maximum mean discrepancy as its divergence (the MMD-VAE):

    loss = rec + (1 - alpha) * beta * KL(q(z|x) || p(z)) + (alpha + lambda - 1) * MMD^2(q(z), p(z))

q(z) is the aggregate posterior, represented by the batch's codes z ~ q(z|x); p(z) by as many
prior draws. alpha = 1 drops the per-sentence KL (no pressure against information in z); lambda
weighs how closely q(z) must match p(z). beta (the KL-weight schedule) multiplies the KL term only.

MMD^2 is the unbiased estimate (Gretton et al. 2012), the diagonals left out:
    mean_{i != j} k(z_i, z_j) + mean_{i != j} k(z'_i, z'_j) - 2 mean_{i, j} k(z_i, z'_j)
with an RBF kernel exp(-|z - z'|^2 / C) or the inverse multiquadric C / (C + |z - z'|^2)
(Tolstikhin et al. 2018 "Wasserstein auto-encoders"), C = 2 d scale^2 in both (d the latent size,
scale the prior's standard deviation: a bandwidth that grows with the typical distance).

The prior draws come from a generator seeded by the step, so a resumed run draws the same ones
with nothing checkpointed, and every process the same. With several processes, MMD^2 is still the
whole batch's: each process gathers every code (without gradient, through the protocol's sum) and
takes the pairs of its own codes with all codes (`share_mmd`), so the shares' terms add up to the
whole batch's MMD^2 and their gradients to its gradient.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

import torch
from torch import Tensor

from vae_text.core.errors import ConfigError
from vae_text.core.options import Range
from vae_text.objectives.base import Objective, StepInput, StepOutput, register
from vae_text.objectives.shares import (
    Weight,
    batch_means,
    refuse_free_bits,
    scheduled_beta,
    share_sentences,
)

Kernel = Literal["rbf", "imq"]
KERNELS = get_args(Kernel)
PRIOR_SEED = 0x1FD0  # salt of the prior draws' generator: any constant, fixed for reproducibility


def kernel(x: Tensor, y: Tensor, name: str, scale: float = 1.0) -> Tensor:
    """k(x_i, y_j) for codes x (n, d) and y (m, d) -> (n, m), with C = 2 d scale^2."""
    c = 2.0 * x.shape[-1] * scale**2
    sq = torch.cdist(x, y).pow(2)  # (n, m)
    if name == "rbf":
        return torch.exp(-sq / c)
    if name == "imq":
        return c / (c + sq)
    raise ValueError(f"unknown kernel {name!r}: one of {KERNELS}")


def mmd(z: Tensor, z_prior: Tensor, name: str = "rbf", scale: float = 1.0) -> Tensor:
    """The unbiased MMD^2 between samples z (n, d) and z_prior (m, d), n, m >= 2; a 0-dim tensor."""
    n, m = z.shape[0], z_prior.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"MMD^2 needs two samples a side, got {n} and {m}")
    kxx, kyy = kernel(z, z, name, scale), kernel(z_prior, z_prior, name, scale)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return within_x + within_y - 2 * kernel(z, z_prior, name, scale).mean()


def share_mmd(z: Tensor, z_all: Tensor, first: int, z_prior: Tensor, name: str = "rbf",
              scale: float = 1.0) -> Tensor:
    """This share's term of the whole batch's unbiased MMD^2: z (R, d) are rows first .. first+R-1
    of all n codes z_all (n, d, no gradient), z_prior (m, d). Summed over the shares of a batch the
    terms are `mmd(z_all, z_prior)`, and so are their gradients: a pair of codes (i, j) enters
    as 2 k(z_i, sg z_j) - k(sg z_i, sg z_j), worth k(z_i, z_j) with the gradient of both of its
    symmetric terms (sg: no gradient); the prior's within term is split by the share's rows."""
    n, m, rows = z_all.shape[0], z_prior.shape[0], z.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"MMD^2 needs two samples a side, got {n} and {m}")
    kxx = kernel(z, z_all, name, scale)  # (R, n)
    pairs = 2 * kxx - kxx.detach()
    own = torch.arange(rows, device=z.device)
    within_x = (pairs.sum() - pairs[own, first + own].sum()) / (n * (n - 1))
    kyy = kernel(z_prior, z_prior, name, scale)
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1)) * rows / n
    return within_x + within_y - 2 * kernel(z, z_prior, name, scale).sum() / (n * m)


def prior_draws(prior, n: int, step: int, like: Tensor) -> Tensor:
    """n codes from p(z) for `step`, the same on every process and after a resume."""
    g = torch.Generator().manual_seed(PRIOR_SEED * 1_000_003 + step)
    return prior.sample(n, generator=g, device=like.device).to(like.dtype)


@register
class InfoVae(Objective):
    """rec + (1 - alpha) beta KL + (alpha + lambda_ - 1) MMD^2 with kernel `kernel` of `scale`;
    both weights >= 0: alpha <= 1 and alpha + lambda_ >= 1, and at most 1e6 (shares.Weight); the
    prior's `scale` at most 1000 (the kernel's C = 2 d scale^2 stays a float32)."""

    name = "infovae"

    def __init__(self, cfg, alpha: Annotated[float, Range(ge=-1e6, le=1)] = 0.0,
                 lambda_: Weight = 1000.0, kernel: Kernel = "imq",
                 scale: Annotated[float, Range(gt=0, le=1000)] = 1.0):
        super().__init__(cfg)
        if not alpha + lambda_ - 1 >= 0:
            raise ConfigError(f"objective.args.lambda_={lambda_} is invalid: alpha + lambda_ - 1 "
                              f"(the MMD's weight) must be >= 0")
        refuse_free_bits(cfg, self.name)
        self.alpha, self.lam, self.kernel, self.scale = float(alpha), float(lambda_), kernel, float(scale)

    def beta(self, step: int) -> float:
        return scheduled_beta(self.cfg, step)

    def __call__(self, inp: StepInput) -> StepOutput:
        out, B = inp.out, inp.batch_size
        rec = out.rec.float() * inp.share  # (N,)
        kl = out.kl.float().sum(-1) * inp.share  # (N,)
        z = out.z.float()  # (N, Z) the share's codes: draws of the aggregate posterior
        n = B * inp.samples  # codes of the whole batch
        if n >= 2 and share_sentences(inp) > 0:  # B * its term: the shares add up to B * MMD^2
            everyone = z.new_zeros(n, z.shape[1])
            start = inp.first * inp.samples
            everyone[start:start + z.shape[0]] = z.detach()
            z_all = inp.reduce(everyone).to(z.device, z.dtype)  # (n, Z) every process's codes
            z_prior = prior_draws(inp.prior, n, inp.step, z)
            divergence = share_mmd(z, z_all, start, z_prior, self.kernel, self.scale) * B
        else:  # one code has no within-sample term (no estimate); a share of none adds nothing
            divergence = z.sum() * 0.0
        weight_kl, weight_mmd = (1 - self.alpha) * inp.beta, self.alpha + self.lam - 1
        loss = (rec.sum() + weight_kl * kl.sum() + weight_mmd * divergence) / B
        stats = batch_means(inp, {"rec": rec.sum(), "kl": kl.sum(), "mmd": divergence})
        stats["loss"] = stats["rec"] + weight_kl * stats["kl"] + weight_mmd * stats["mmd"]
        return StepOutput(loss, stats)
