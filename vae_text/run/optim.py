"""Optimizers and the learning-rate rule of the loop.

`OPTIMIZERS` maps `optim.name` to a builder. `adam` is the default; `sgd` with lr 1.0, gradient
clipping at 5 and the lr halved on a validation plateau is the recipe of the published PTB tables
(He et al. 2019; Li et al. 2019).

`PlateauDecay` is that plateau rule, written as their code applies it, once per epoch:
- a validation score no better than the reference counts as a bad epoch; a better one (or an equal
  one) becomes the new reference and clears the count;
- after more than `patience` bad epochs in a row, and not before `start_epoch` epochs are complete,
  the lr is multiplied by `factor` (never below `min_lr`), the count is cleared and the reference
  becomes the current (worse) score;
- the loop may then reload the best weights (`optim.plateau_reload_best`) and stop after a given
  number of decays (`train.max_lr_decays`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from vae_text.core.errors import CheckpointError

if TYPE_CHECKING:  # annotations only
    from vae_text.config import OptimConfig


def adam(params: Iterable[nn.Parameter], cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    # fused: one kernel per step over all parameters (on CPU too), instead of a dozen ops per
    # parameter; the same update up to float rounding, and the same state_dict
    params = list(params)
    fused = all(isinstance(p, torch.Tensor) and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                            fused=fused or None)


def sgd(params: Iterable[nn.Parameter], cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {"adam": adam, "sgd": sgd}


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig,
                    lr: float | None = None) -> torch.optim.Optimizer:
    """The optimizer `cfg.name` over `params`, at `lr` (default `cfg.lr`)."""
    return OPTIMIZERS[cfg.name](params, cfg, cfg.lr if lr is None else lr)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """`optimizer.load_state_dict(state)`, keeping this optimizer's implementation (fused or not):
    torch would take the saved groups' flag, so a checkpoint from an unfused Adam would resume
    with the slow per-parameter loop."""
    kernels = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, kept in zip(optimizer.param_groups, kernels, strict=True):
        group.update(kept)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass
class PlateauDecay:
    """The plateau rule above; its fields are the state a resumed run restores."""

    factor: float
    patience: int = 0
    start_epoch: int = 0
    min_lr: float = 0.0
    reference: float = math.inf
    bad_epochs: int = 0
    decays: int = 0

    def step(self, score: float, epochs_done: int) -> bool:
        """Record an epoch's validation score; True when the lr is to be decayed now."""
        if not score > self.reference:
            self.reference, self.bad_epochs = score, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs <= self.patience or epochs_done < self.start_epoch:
            return False
        self.reference, self.bad_epochs = score, 0
        self.decays += 1
        return True

    def next_lr(self, lr: float) -> float:
        return max(self.min_lr, lr * self.factor)

    def state_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k in ("reference", "bad_epochs", "decays")}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"reference", "bad_epochs", "decays"}:
            raise CheckpointError("the checkpoint's lr-plateau state comes from an older vae_text "
                                  "(torch's ReduceLROnPlateau); start the run afresh")
        self.reference, self.bad_epochs, self.decays = (
            state["reference"], state["bad_epochs"], state["decays"])


def plateau_rule(cfg: OptimConfig) -> PlateauDecay | None:
    if cfg.plateau_factor is None:
        return None
    return PlateauDecay(cfg.plateau_factor, cfg.plateau_patience, cfg.plateau_start_epoch,
                        cfg.min_lr)
