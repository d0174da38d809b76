"""Aggressive inference training (He et al. 2019): before each decoder update, update the encoder
alone on fresh batches until its loss stops improving; stop being aggressive once validation MI
stops rising."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
from torch import Tensor

from vae_text.core.options import PositiveInt
from vae_text.model.textvae import TextVAE
from vae_text.remedies.base import Loop, Remedy, encoder_parameters, register, update_only

log = logging.getLogger("vae_text")


def until_no_progress(step: Callable[[Tensor], None], next_batch: Callable[[int], object],
                      loss_fn: Callable[[object], Tensor | tuple[Tensor, float]],
                      max_inner: int = 100, check_every: int = 10) -> int:
    """He et al.'s inner loop: `step(loss)` on batches `next_batch(i)` until the mean loss of the
    last `check_every` steps is no better than that of the window before (or `max_inner` steps).
    Returns the number of steps taken.

    `loss_fn` returns the loss to differentiate, or (that loss, the value to judge progress by):
    in a distributed run the whole batch's loss, the same on every rank, so all stop together.
    """
    previous, window, steps = float("inf"), 0.0, 0
    for i in range(max_inner):
        loss = loss_fn(next_batch(i))
        loss, value = loss if isinstance(loss, tuple) else (loss, None)
        step(loss)
        window += loss.item() if value is None else value
        steps += 1
        if steps % check_every == 0:
            if window >= previous:
                break
            previous, window = window, 0.0
    return steps


def aggressive_encoder_updates(model: TextVAE, optimizer: torch.optim.Optimizer,
                               next_batch: Callable[[int], object],
                               loss_fn: Callable[[object], Tensor | tuple[Tensor, float]],
                               clip_norm: float | None, max_inner: int = 100,
                               check_every: int = 10) -> int:
    """The inner loop with encoder-only steps of `optimizer` (outside a training loop)."""

    def step(loss: Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        update_only(model, "encoder")
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(encoder_parameters(model), clip_norm)
        optimizer.step()

    return until_no_progress(step, next_batch, loss_fn, max_inner, check_every)


@register
class AggressiveInference(Remedy):
    name = "aggressive"
    switch = "aggressive"
    needs = ("latent", "encoder")
    state_keys = ("active", "best_mi")

    # the cap of the inner loop, and the inner steps between two checks of the encoder's loss
    def __init__(self, aggressive_max_inner: PositiveInt = 100,
                 aggressive_check_every: PositiveInt = 10):
        self.max_inner, self.check_every = aggressive_max_inner, aggressive_check_every
        self.active, self.best_mi = True, -math.inf

    def _on(self, loop: Loop) -> bool:
        return self.active and loop.phase is None  # not in another remedy's phase

    def before_step(self, loop: Loop) -> dict[str, float]:
        if not self._on(loop):
            return {"inner_steps": 0}
        steps = until_no_progress(lambda loss: loop.optimize(loss, "encoder"), loop.inner_batch,
                                  lambda item: loop.loss_of(*item), self.max_inner,
                                  self.check_every)
        return {"inner_steps": steps}

    def after_backward(self, loop: Loop) -> None:
        if self._on(loop):  # the outer step updates the decoder only
            update_only(loop.model, "decoder")

    def after_validation(self, loop: Loop, metrics: dict, epoch_end: bool) -> None:
        if self._on(loop) and epoch_end:
            if "mi" in metrics and metrics["mi"] < self.best_mi:
                self.active = False
                log.info("aggressive training off: validation MI stopped rising (%.3f < %.3f)",
                         metrics["mi"], self.best_mi)
            else:
                self.best_mi = metrics.get("mi", self.best_mi)
        metrics["aggressive"] = int(self.active)
