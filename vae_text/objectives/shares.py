"""What the objectives beyond the ELBO share: a process's share of a batch seen per sentence, and
the whole batch's means of its sums in one sync, so that the shares' losses add up to the whole
batch's loss (vae_text.objectives.base) however the batch is split over processes; and the
declarations of their options' kinds (vae_text.core.options)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import torch
from torch import Tensor

from vae_text.core.errors import ConfigError
from vae_text.core.options import Range
from vae_text.objectives.schedules import kl_weight

if TYPE_CHECKING:  # annotations only
    from vae_text.config import ObjectiveConfig
    from vae_text.objectives.base import StepInput

# A weight of a loss term, up to a thousand times the built-in defaults (gamma, lambda_ = 1000):
# far beyond, the loss overflows float32 and the run diverges at its first step.
Weight = Annotated[float, Range(ge=0, le=1e6)]
# A rate in nats a sentence: 1e4 is more than any sentence carries (a PTB sentence has ~100).
Nats = Annotated[float, Range(ge=0, le=1e4)]


def by_sentence(rows: Tensor, samples: int) -> Tensor:
    """(R, ...) rows, sentence-major with `samples` draws a sentence -> (R / K, K, ...)."""
    return rows.reshape(rows.shape[0] // samples, samples, *rows.shape[1:])


def share_sentences(inp: StepInput) -> float:
    """Sentences in this share: its rows over K, and 0 for a process that got none (whose one
    placeholder row is multiplied by `share` = 0)."""
    return inp.out.rec.shape[0] // inp.samples * inp.share


def batch_means(inp: StepInput, sums: dict[str, Tensor]) -> dict[str, Tensor]:
    """The whole batch's per-sentence mean of each of this share's 0-dim `sums`: summed over
    processes in one `reduce` and divided by B; float64 0-dim tensors on the sums' device, no
    gradient (nothing is read back to the host)."""
    stacked = torch.stack([s.detach().reshape(()).to(torch.float64) for s in sums.values()])
    totals = inp.reduce(stacked)
    return {name: totals[i] / inp.batch_size for i, name in enumerate(sums)}


def refuse_free_bits(cfg: ObjectiveConfig, name: str) -> None:
    """Free bits change the ELBO's KL term; an objective with its own KL term must not get them
    silently ignored."""
    if cfg.free_bits > 0:
        raise ConfigError(f"objective.free_bits={cfg.free_bits} does not apply to "
                          f"objective={name} (it has its own KL term): set objective.free_bits=0")


def scheduled_beta(cfg: ObjectiveConfig, step: int) -> float:
    """beta(step) = objective.kl_weight * objective.schedule(step), as the ELBO's."""
    sched = cfg.schedule
    return kl_weight(step, cfg.kl_weight, sched.name, **sched.params)
