"""A diverging run stops: a NaN or infinite loss or gradient norm ends training with one line
naming the first such step, at the next log step or checkpoint (the step itself reads nothing back
from the device), and a checkpoint is never written after it or with NaN or infinite weights, so
the last good one stays as it was."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from vae_text.core.errors import VaeTextError


class TrainingDiverged(VaeTextError):
    """Training produced NaN or infinity; the run stops (exit status 2), keeping its last good checkpoint.

    `cause`: what diverged and when; `kept`: what the run keeps."""

    def __init__(self, cause: str, kept: str):
        super().__init__(f"{cause}; {kept}. Lower optim.lr or set optim.clip_norm")
        self.cause, self.kept = cause, kept


def clip_gradients(model: nn.Module, clip_norm: float | None) -> Tensor:
    """Clip the gradients' global norm to `clip_norm` (None: no clipping); their norm before it,
    a 0-dim tensor on the gradients' device (not read: see DivergenceWatch)."""
    return torch.nn.utils.clip_grad_norm_(model.parameters(),
                                          math.inf if clip_norm is None else clip_norm)


class DivergenceWatch:
    """The first step whose loss or gradient norm was NaN or infinite, kept on the device.

    `update` runs every step and reads nothing; `check` reads three numbers (the step, its loss
    and its gradient norm) and raises if there was one. The loop checks at its log steps and
    before every checkpoint, so the error names the first bad step and no checkpoint is written
    from weights that a bad step has touched.
    """

    def __init__(self):
        self.first: Tensor | None = None  # (3,) float64: step, loss, gradient norm; step 0: none yet

    def update(self, loss: Tensor, grad_norm: Tensor, step: int) -> None:
        now = torch.stack([loss.detach().to(grad_norm.device, torch.float64),
                           grad_norm.detach().to(torch.float64)])  # (2,)
        if self.first is None:
            self.first = torch.zeros(3, dtype=torch.float64, device=grad_norm.device)
        record = torch.cat([torch.full((1,), step, dtype=torch.float64, device=now.device), now])
        new = ~torch.isfinite(now).all() & (self.first[0] == 0)  # the first bad step only
        self.first = torch.where(new, record, self.first)

    def check(self, run_dir: Path) -> None:
        if self.first is None:
            return
        step, loss, grad_norm = self.first.tolist()
        if step:
            stop_if_diverged(loss, grad_norm, run_dir, int(step))


def stop_if_diverged(loss: float, grad_norm: float, run_dir: Path, step: int) -> None:
    if not math.isfinite(loss):
        raise diverged(run_dir / "checkpoints" / "last.pt", f"the loss is {loss}", f"at step {step}")
    if not math.isfinite(grad_norm):
        raise diverged(run_dir / "checkpoints" / "last.pt", f"the gradient norm is {grad_norm}",
                       f"at step {step}")


def first_nonfinite(state: dict[str, Tensor]) -> str | None:
    """The name of the first floating-point tensor of `state` with a NaN or infinite value."""
    return next((k for k, v in state.items()
                 if v.is_floating_point() and not torch.isfinite(v).all()), None)


def check_weights(path: Path, blob: dict) -> None:
    """Before a checkpoint is written to `path`: its weights are finite."""
    bad = first_nonfinite(blob["model"])
    if bad is not None:
        raise diverged(path.parent / "last.pt", f"the weights ({bad}) hold NaN or infinity",
                       f"by step {blob['state']['step']}")


def diverged(last: Path, what: str, when: str) -> TrainingDiverged:
    """The error, saying which checkpoint a user can go back to (`last`: the run's last.pt)."""
    kept = "no checkpoint was written"
    if last.exists():  # read with mmap: only the loop state is needed, not the weights
        step = torch.load(last, map_location="cpu", weights_only=True, mmap=True)["state"]["step"]
        kept = f"checkpoints/last.pt keeps the last good weights (step {step})"
    return TrainingDiverged(f"training diverged {when}: {what}", kept)
