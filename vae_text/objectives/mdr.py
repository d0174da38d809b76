"""The minimum desired rate (Pelsmaeker & Aziz 2020 "Effective estimation of deep generative
language models", ACL): maximise the ELBO subject to a rate of at least r nats,

    max ELBO  subject to  KL >= r,   KL = E_x KL(q(z|x) || p(z)) over the batch,

by the Lagrangian relaxation with a multiplier lambda >= 0, minimised over the model and maximised
over lambda:

    loss = rec + beta * KL + lambda * (r - KL)          (beta = 1: the paper's ELBO)
    lambda <- max(0, lambda + lr * (r - KL))            after each optimizer step

The step on lambda is projected gradient ascent on the loss: while the batch's rate is below r,
lambda grows and the KL's net weight beta - lambda falls (below 0 it pushes the rate up); once
the constraint holds, lambda decays to 0 and the plain ELBO is left. The constraint is on the
batch-mean KL (the paper's rate, estimated on each minibatch), not on each sentence's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vae_text.objectives.base import Objective, StepInput, StepOutput, register
from vae_text.objectives.shares import (
    Nats,
    Weight,
    batch_means,
    refuse_free_bits,
    scheduled_beta,
    share_sentences,
)


def lagrangian(rec: Tensor, kl: Tensor, beta: float, lam: float, rate: float) -> Tensor:
    """The MDR loss of each sentence, rec + beta KL + lambda (r - KL): rec (N,), kl (N,) -> (N,).
    Its batch mean is the Lagrangian of the batch-mean constraint."""
    return rec + beta * kl + lam * (rate - kl)


def dual_step(lam: Tensor, rate: float, kl: Tensor, lr: float) -> Tensor:
    """Projected gradient ascent on lambda: d loss / d lambda = r - KL, then back onto lambda >= 0.
    Tensors (float64), so that lambda stays on the device the KL is on."""
    return (lam + lr * (rate - kl)).clamp(min=0.0)


@register
class MinimumDesiredRate(Objective):
    """The ELBO with the constraint KL >= `rate` nats; lambda (`lambda_init`, step `lambda_lr`)
    is learned after each step, logged as "lambda" and kept in checkpoints."""

    name = "mdr"

    def __init__(self, cfg, rate: Nats = 8.0, lambda_lr: Weight = 0.01, lambda_init: Weight = 0.0):
        super().__init__(cfg)
        self.rate, self.lr = float(rate), float(lambda_lr)
        # a float64 0-dim tensor, moved to the statistics' device by the first step (and never
        # read back there): state_dict saves a CPU copy, exactly
        self.lam = torch.tensor(float(lambda_init), dtype=torch.float64)
        refuse_free_bits(cfg, self.name)

    def beta(self, step: int) -> float:
        return scheduled_beta(self.cfg, step)

    def __call__(self, inp: StepInput) -> StepOutput:
        rec = inp.out.rec.float() * inp.share  # (N,)
        kl = inp.out.kl.float().sum(-1) * inp.share  # (N,)
        # lambda * r counted once per sentence: the shares' losses add up to the batch's
        # (lambda r counted in float64, then added in the loss's dtype, as a Python float would be)
        constant = (self.lam * self.rate * share_sentences(inp)).to(rec.dtype)
        loss = (lagrangian(rec, kl, inp.beta, self.lam, 0.0).sum() + constant) / inp.batch_size
        stats = batch_means(inp, {"rec": rec.sum(), "kl": kl.sum()})
        stats["loss"] = lagrangian(stats["rec"], stats["kl"], inp.beta, self.lam, self.rate)
        stats["lambda"] = self.lam.clone()  # the lambda this step's loss used
        return StepOutput(loss, stats)

    def after_step(self, stats: dict[str, Tensor]) -> None:
        kl = stats["kl"].to(torch.float64)
        self.lam = dual_step(self.lam.to(kl.device), self.rate, kl, self.lr)

    def state_dict(self) -> dict[str, Tensor]:
        return {"lam": self.lam.detach().cpu()}  # the one read of lambda: when a checkpoint is saved

    def load_state_dict(self, state: dict) -> None:
        # a checkpoint of an older vae_text holds a Python float: the same float64 value
        self.lam = torch.as_tensor(state["lam"], dtype=torch.float64).clone()
