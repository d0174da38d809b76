"""KL-weight schedules: beta(step) = kl_weight * schedule(step) (Bowman et al. 2016; Fu et al. 2019).

The `elbo` objective (and any objective that weighs a KL) reads its weight from here.
"""

from __future__ import annotations

import math

# --- KL-weight schedules ------------------------------------------------------------------------
# Each schedule is a pure function of the optimizer step returning a factor in [0, 1]; the weight
# used in the loss is kl_weight * factor. To add one, write a function and register it below:
# it becomes the option `objective/schedule=<name>` and its keyword arguments, with their defaults,
# the keys of `objective.schedule` (vae_text.config.register): the signatures are the defaults' home.


def constant(step: int) -> float:
    """beta = kl_weight at every step (beta-VAE; kl_weight = 1 is the plain VAE)."""
    return 1.0


def linear(step: int, warmup_steps: int = 10_000, start: float = 0.0) -> float:
    """Linear warm-up from `start` to 1 over `warmup_steps` steps (Kim 2018; He 2019 use 0.1).
    The default is ~7.6 PTB epochs at batch 32 (1,315 steps an epoch)."""
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


def cyclical(step: int, cycle_steps: int = 5_260, ratio: float = 0.5, start: float = 0.0,
             zero_ratio: float = 0.0, cycles: int | None = None) -> float:
    """Cyclical annealing (Fu et al. 2019): the warm-up repeated every `cycle_steps` steps.

    Within a cycle at position tau in [0, 1): 0 while tau < zero_ratio (an optional zero phase),
    then a linear rise from `start` to 1 over the next `ratio` of the cycle, then 1. After
    `cycles` cycles (null: never) the weight stays at 1. The default cycle is 4 PTB epochs at
    batch 32.
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


