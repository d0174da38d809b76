"""A diverging run stops: a NaN or infinite loss or gradient norm ends training with one line
naming the step, before the optimizer applies it, and a checkpoint is never written with NaN or
infinite weights, so the last good one stays as it was."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from vae_text.core.errors import VaeTextError


class TrainingDiverged(VaeTextError):
    """Training produced NaN or infinity; the run stops (exit status 2), keeping its last good checkpoint."""


def clip_gradients(model: nn.Module, clip_norm: float | None) -> float:
    """Clip the gradients' global norm to `clip_norm` (None: no clipping); their norm before it."""
    return float(torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                math.inf if clip_norm is None else clip_norm))


def stop_if_diverged(loss: float, grad_norm: float, run_dir: Path, step: int) -> None:
    if not math.isfinite(loss):
        raise diverged(run_dir / "checkpoints" / "last.pt", f"the loss is {loss}", f"at step {step}")
    if not math.isfinite(grad_norm):
        raise diverged(run_dir / "checkpoints" / "last.pt", f"the gradient norm is {grad_norm}",
                       f"at step {step}")


def check_weights(path: Path, blob: dict) -> None:
    """Before a checkpoint is written to `path`: its weights are finite."""
    bad = next((k for k, v in blob["model"].items()
                if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise diverged(path.parent / "last.pt", f"the weights ({bad}) hold NaN or infinity",
                       f"by step {blob['state']['step']}")


def diverged(last: Path, what: str, when: str) -> TrainingDiverged:
    """The error, saying which checkpoint a user can go back to (`last`: the run's last.pt)."""
    kept = "no checkpoint was written"
    if last.exists():  # read with mmap: only the loop state is needed, not the weights
        step = torch.load(last, map_location="cpu", weights_only=True, mmap=True)["state"]["step"]
        kept = f"checkpoints/last.pt keeps the last good weights (step {step})"
    return TrainingDiverged(f"training diverged {when}: {what}; {kept}. "
                            f"Lower optim.lr or set optim.clip_norm")
