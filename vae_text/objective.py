"""The maths of the objective: Gaussian KL, KL-weight schedules and the (beta-)ELBO loss.

Conventions (docs/protocol.md): a sentence's reconstruction term is the *sum* of its token NLLs
(words + one <eos>, never padding); both rec and KL are averaged over sentences, so the KL weight
means the same thing whatever the batch size or sentence length.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per dimension, closed form. Shape of `mu`."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


# --- KL-weight schedules ------------------------------------------------------------------------
# Each schedule is a pure function of the optimizer step returning a factor in [0, 1]; the weight
# used in the loss is kl_weight * factor. To add one, write a function and register it below;
# its keyword arguments become the keys of `conf/objective/schedule/<name>.yaml`.


def constant(step: int) -> float:
    """beta = kl_weight at every step (beta-VAE; kl_weight = 1 is the plain VAE)."""
    return 1.0


def linear(step: int, warmup_steps: int = 10_000, start: float = 0.0) -> float:
    """Linear warm-up from `start` to 1 over `warmup_steps` steps (Kim 2018; He 2019 use 0.1)."""
    if warmup_steps <= 0:
        raise ValueError(f"warmup_steps={warmup_steps} must be > 0")
    if not 0.0 <= start <= 1.0:
        raise ValueError(f"start={start} must be in [0, 1]")
    return start + (1.0 - start) * min(1.0, step / warmup_steps)


def logistic(step: int, k: float = 0.0025, x0: int = 2500) -> float:
    """Logistic annealing 1 / (1 + exp(-k (step - x0))) (Bowman et al. 2016)."""
    if k <= 0:
        raise ValueError(f"k={k} must be > 0")
    z = -k * (step - x0)
    return 1.0 / (1.0 + math.exp(z)) if z < 700 else 0.0


def cyclical(step: int, cycle_steps: int = 5_000, ratio: float = 0.5, start: float = 0.0,
             zero_ratio: float = 0.0, cycles: int | None = None) -> float:
    """Cyclical annealing (Fu et al. 2019): the warm-up repeated every `cycle_steps` steps.

    Within a cycle at position tau in [0, 1): 0 while tau < zero_ratio (an optional zero phase),
    then a linear rise from `start` to 1 over the next `ratio` of the cycle, then 1. After
    `cycles` cycles (null: never) the weight stays at 1.
    """
    if cycle_steps <= 0:
        raise ValueError(f"cycle_steps={cycle_steps} must be > 0")
    if not (0 < ratio <= 1 and 0 <= zero_ratio < 1 and ratio + zero_ratio <= 1):
        raise ValueError(f"ratio={ratio}, zero_ratio={zero_ratio}: need 0 < ratio, "
                         f"0 <= zero_ratio and ratio + zero_ratio <= 1")
    if not 0.0 <= start <= 1.0:
        raise ValueError(f"start={start} must be in [0, 1]")
    if cycles is not None and step >= cycles * cycle_steps:
        return 1.0
    tau = (step % cycle_steps) / cycle_steps
    if tau < zero_ratio:
        return 0.0
    return start + (1.0 - start) * min(1.0, (tau - zero_ratio) / ratio)


SCHEDULES = {"constant": constant, "linear": linear, "logistic": logistic, "cyclical": cyclical}


def kl_weight(step: int, beta: float, name: str, **params) -> float:
    """The KL weight at `step`: `beta` times schedule `name`'s factor."""
    return beta * SCHEDULES[name](step, **params)


def free_bits(kl: Tensor, budget: float, mode: str = "dim") -> Tensor:
    """The KL term of the loss with free bits, a scalar; `kl` is (B, Z) per sentence and dimension.

    mode "dim" (Kingma et al. 2016; Li et al. 2019): the budget is split over the Z dimensions
    and each dimension's batch-mean KL is raised to budget / Z; "sentence": each sentence's KL is
    raised to `budget`. Below its threshold a term is constant, so it gets no gradient: the
    encoder may spend those nats for free. Only the loss changes; the reported KL stays the KL.
    """
    if budget <= 0:
        return kl.sum(-1).mean()
    if mode == "dim":
        return torch.clamp(kl.mean(0), min=budget / kl.shape[1]).sum()
    if mode == "sentence":
        return torch.clamp(kl.sum(-1), min=budget).mean()
    raise ValueError(f"unknown free-bits mode {mode!r}")


def elbo_loss(rec: Tensor, kl: Tensor, beta: float, free_nats: float = 0.0,
              mode: str = "dim") -> Tensor:
    """Training loss: mean over sentences of rec + beta * KL (with free bits when free_nats > 0).

    `rec`: (B,) per sentence; `kl`: (B, Z) per sentence and latent dimension.
    """
    return rec.mean() + beta * free_bits(kl, free_nats, mode)


def shard_elbo_loss(rec: Tensor, kl: Tensor, beta: float, batch_size: int, free_nats: float = 0.0,
                    mode: str = "dim", kl_dim_mean: Tensor | None = None) -> Tensor:
    """`elbo_loss` for a share (rows) of a batch of `batch_size` sentences, as a surrogate whose
    gradients, summed over the shares, are those of `elbo_loss` on the whole batch.

    Every term is a sum over sentences except per-dimension free bits, whose threshold acts on the
    batch mean: `kl_dim_mean` (Z,), that mean over the whole batch, decides which dimensions get
    gradient. With one share holding the batch, the gradient equals `elbo_loss`'s.
    """
    if free_nats <= 0:
        kl_term = kl.sum()
    elif mode == "sentence":
        kl_term = torch.clamp(kl.sum(-1), min=free_nats).sum()
    elif mode == "dim":
        kl_term = (kl.sum(0) * (kl_dim_mean > free_nats / kl.shape[1])).sum()
    else:
        raise ValueError(f"unknown free-bits mode {mode!r}")
    return (rec.sum() + beta * kl_term) / batch_size


def sentence_nll(logits: Tensor, targets: Tensor, rows: Tensor, batch_size: int) -> Tensor:
    """Sum of token NLLs per sentence.

    logits: (N, V) for the N real (non-pad) target tokens of a batch, targets: (N,),
    rows: (N,) the sentence index of each token. Returns (batch_size,).
    """
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    return torch.zeros(batch_size, dtype=nll.dtype, device=nll.device).index_add_(0, rows, nll)
