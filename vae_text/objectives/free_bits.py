"""Free bits (Kingma et al. 2016): the one rule the loss and the logged loss both use."""

from __future__ import annotations

import torch
from torch import Tensor

FREE_BITS_MODES = ("dim", "sentence", "element")


def free_bits_kl(kl: Tensor, budget: float, mode: str = "dim",
                 dim_mean: Tensor | None = None) -> Tensor:
    """The free-bits KL term summed over the sentences of `kl` (B, Z), a scalar: the one rule the
    loss and the logged loss both use.

    Below its threshold a term is the constant threshold, so it gets no gradient: the encoder may
    spend those nats for free (Kingma et al. 2016). Only the loss changes; the reported KL stays
    the KL. Modes:
    - "dim": each dimension's *batch-mean* KL is raised to budget / Z (Kingma et al.'s groups as
      dimensions). `dim_mean` (Z,) is the mean over the whole batch when `kl` holds a share of it
      (several processes); then the shares' terms add up to the whole batch's.
    - "sentence": each sentence's total KL is raised to `budget`.
    - "element": each sentence's KL in each dimension is raised to budget / Z (Li et al. 2019's
      code for PTB, its `--fb 2`).
    `budget` <= 0 turns free bits off: the plain KL sum.
    """
    if budget <= 0:
        return kl.sum()
    rows, latent = kl.shape
    if mode == "sentence":
        return torch.clamp(kl.sum(-1), min=budget).sum()
    if mode == "element":
        return torch.clamp(kl, min=budget / latent).sum()
    if mode == "dim":
        threshold = budget / latent
        keep = (kl.mean(0) if dim_mean is None else dim_mean) > threshold  # (Z,)
        return (kl * keep).sum() + (~keep).sum() * threshold * rows
    raise ValueError(f"unknown free-bits mode {mode!r}")


def free_bits(kl: Tensor, budget: float, mode: str = "dim") -> Tensor:
    """The free-bits KL term of a batch's loss (mean over its sentences), a scalar."""
    return free_bits_kl(kl, budget, mode) / kl.shape[0]


