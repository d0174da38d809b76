"""The (beta-)ELBO (Kingma & Welling 2014; Higgins et al. 2017): loss = rec + beta(step) * KL,
with the KL term under free bits (Kingma et al. 2016) when `objective.free_bits` > 0.

`elbo_loss` is the pure function (one batch, one process); `Elbo` is the objective the loop calls,
which also handles a process's share of a data-parallel batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vae_text.objectives.base import Objective, StepInput, StepOutput, register
from vae_text.objectives.free_bits import free_bits_kl
from vae_text.objectives.schedules import kl_weight


def elbo_loss(rec: Tensor, kl: Tensor, beta: float, free_nats: float = 0.0,
              mode: str = "dim", batch_size: int | None = None,
              dim_mean: Tensor | None = None) -> Tensor:
    """Training loss: rec + beta * KL (with free bits when free_nats > 0) averaged over sentences.

    `rec`: (B,) per sentence; `kl`: (B, Z) per sentence and latent dimension. For a share (rows)
    of a batch of `batch_size` sentences, with `dim_mean` its mean KL per dimension, the shares'
    losses add up to the whole batch's, and so do their gradients.
    """
    batch_size = rec.shape[0] if batch_size is None else batch_size
    return (rec.sum() + beta * free_bits_kl(kl, free_nats, mode, dim_mean)) / batch_size


@register
class Elbo(Objective):
    """rec + beta * KL per sentence, averaged over the whole batch; beta = objective.kl_weight
    times the schedule `objective.schedule` at the phase's step. Trains a language model too
    (no latent: the KL is empty)."""

    name = "elbo"
    needs_latent = False

    def beta(self, step: int) -> float:
        sched = self.cfg.schedule
        return kl_weight(step, self.cfg.kl_weight, sched.name, **sched.params)

    def __call__(self, inp: StepInput) -> StepOutput:
        o, B = self.cfg, inp.batch_size
        rec, kl = inp.out.rec.float() * inp.share, inp.out.kl.float() * inp.share  # (R,), (R, Z)
        sums = inp.reduce(torch.cat([rec.sum()[None], kl.sum(0)]))  # one sync: rec, KL per dim
        kl_dims = sums[1:].float()  # (Z,) the whole batch's KL per dimension
        dim_mean = (kl_dims / B).to(kl.device, kl.dtype)  # free bits' "dim" threshold is batch-wide
        # computed once: the differentiated loss and the logged one use the same KL term; a share
        # with no sentence keeps a zero term ("dim" adds its threshold for every row it was given)
        kl_term = free_bits_kl(kl, o.free_bits, o.free_bits_mode, dim_mean) * inp.share
        kl_sum = kl_dims.sum().double()  # summed in float32 as the loss's KL, then float64
        kl_total = inp.reduce(kl_term.detach()[None])[0] if o.free_bits > 0 else kl_sum
        rec_total = sums[0]
        stats = {"loss": (rec_total + inp.beta * kl_total) / B, "rec": rec_total / B, "kl": kl_sum / B}
        loss = (rec.sum() + inp.beta * kl_term) / B
        return StepOutput(loss, stats)  # float64 0-dim tensors on the device: nothing read back
