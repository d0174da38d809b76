"""Controlled capacity (Burgess et al. 2018 "Understanding disentangling in beta-VAE", eq. 8):

    loss = rec + gamma * |KL(q(z|x) || p(z)) - C|,   C(step) = C_max * min(1, step / steps)

The KL of each sentence is pulled towards the capacity C from both sides, C raised linearly from
0 so that the code learns to carry information gradually instead of collapsing. As in the paper the
penalty is per sentence (inside the expectation over the data), not on the batch mean. beta (the
KL-weight schedule) multiplies the penalty: a remedy's autoencoder phase (beta = 0) turns it off.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vae_text.core.options import PositiveInt
from vae_text.objectives.base import Objective, StepInput, StepOutput, register
from vae_text.objectives.shares import Nats, Weight, batch_means, refuse_free_bits, scheduled_beta


def capacity(step: int, c_max: float, steps: int) -> float:
    """C at `step`: linear from 0 at step 0 to `c_max` nats at `steps`, then constant."""
    if steps <= 0:
        raise ValueError(f"steps={steps} must be > 0")
    return c_max * min(1.0, step / steps)


def capacity_penalty(kl: Tensor, c: float, gamma: float) -> Tensor:
    """gamma |KL - C| of each sentence: kl (N,) -> (N,)."""
    return gamma * (kl - c).abs()


@register
class Capacity(Objective):
    """rec + beta gamma |KL - C(step)|, C rising to `c_max` nats over `steps` optimizer steps."""

    name = "capacity"

    def __init__(self, cfg, gamma: Weight = 1000.0, c_max: Nats = 8.0, steps: PositiveInt = 10_000):
        super().__init__(cfg)
        refuse_free_bits(cfg, self.name)
        self.gamma, self.c_max, self.steps = float(gamma), float(c_max), steps

    def beta(self, step: int) -> float:
        return scheduled_beta(self.cfg, step)

    def __call__(self, inp: StepInput) -> StepOutput:
        c = capacity(inp.step, self.c_max, self.steps)
        rec = inp.out.rec.float() * inp.share  # (N,)
        kl = inp.out.kl.float().sum(-1)  # (N,) each sentence's whole KL (the penalty is not linear)
        penalty = capacity_penalty(kl, c, self.gamma) * inp.share  # (N,)
        loss = (rec.sum() + inp.beta * penalty.sum()) / inp.batch_size
        stats = batch_means(inp, {"rec": rec.sum(), "kl": kl.sum() * inp.share,
                                  "penalty": penalty.sum()})
        stats["loss"] = stats["rec"] + inp.beta * stats.pop("penalty")
        stats["capacity"] = torch.tensor(c, dtype=torch.float64)
        return StepOutput(loss, stats)
