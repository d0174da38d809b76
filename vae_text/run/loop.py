"""The epoch loop of a run: batches in order, the train/ log cadence, checkpoints, validation
with model selection and the lr plateau rule, and the rules that stop training.

Functions of the trainer (vae_text.run.trainer) that hold no step arithmetic: a step is
`Trainer.train_step`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from vae_text.core.errors import CheckpointError
from vae_text.data.batches import batch_plan, iterate
from vae_text.metrics import evaluate
from vae_text.remedies import update_only
from vae_text.run.logger import MetricsLogger, TrainWindow
from vae_text.run.optim import build_optimizer, set_lr

if TYPE_CHECKING:  # annotations only
    from torch import Tensor

    from vae_text.data.batches import Batch
    from vae_text.remedies import Phase

# The vae_text.run.trainer.Trainer whose epochs these functions run. Named, not imported, even for
# type checkers: the trainer imports this module (tests/test_architecture.py counts every import).
Trainer = Any

log = logging.getLogger("vae_text")


def fit(t: Trainer, logger: MetricsLogger) -> None:
    cfg, split = t.s.train, t.corpus["train"]
    t.stopped = already_stopped(t) or "epochs"  # why training ended, for results.json
    done = t.stopped != "epochs"
    clock = (time.perf_counter(), t.state.step)  # this process's start: the speed for the estimate
    while t.state.epoch < t.epoch_cap() and not done:
        t.plan = plan = batch_plan(split, cfg.batch_size, shuffle=True, seed=t.s.seed,
                                   epoch=t.state.epoch, pool=t.s.data.bucket_pool)
        if t.state.batch_in_epoch > len(plan):  # a resume with other data or batch size
            raise CheckpointError(
                f"train.resume={cfg.resume}: the checkpoint stopped at batch "
                f"{t.state.batch_in_epoch} of an epoch that now has {len(plan)} batches; "
                f"resume with the same data (data.max_sentences, data.max_len) and train.batch_size")
        bar = tqdm(total=len(plan), initial=t.state.batch_in_epoch,
                   disable=not (cfg.progress and t.dist.main),
                   desc=f"epoch {t.state.epoch + 1}/{t.epoch_cap()}", dynamic_ncols=True,
                   leave=False)
        t.window = window = t.window if t.state.batch_in_epoch else TrainWindow()  # resumed
        started = time.perf_counter()
        for batch in iterate(split, plan, start=t.state.batch_in_epoch, device=t.device):
            window.add(t.train_step(batch))
            bar.update(1)
            if t.state.step % cfg.log_every == 0:
                stats = read_window(t, window, time.perf_counter() - started)
                started = time.perf_counter()
                if clock is not None and t.dist.main:  # the first log step: say how long it takes
                    log.info("%s", time_left(t, len(plan), clock))
                    clock = None
                bar.set_postfix(loss=f"{stats['loss']:.2f}", rec=f"{stats['rec']:.2f}",
                                kl=f"{stats['kl']:.2f}", beta=f"{stats['beta']:.3f}",
                                tok_s=f"{stats['tokens_per_s']:.0f}")
                logger.log({f"train/{k}": v for k, v in stats.items()}, t.state.step,
                           t.state.epoch, echo="file" if cfg.progress else True)
            if cfg.checkpoint_every and t.state.step % cfg.checkpoint_every == 0:
                t.save("last.pt")
            if cfg.max_steps is not None and t.state.step >= cfg.max_steps:
                done, t.stopped = True, "max_steps"
                break
            if t.state.step % cfg.log_every == 0 and out_of_time(t):
                done, t.stopped = True, "max_minutes"
                break
        bar.close()
        t.check_finite()  # a diverged model is neither validated nor saved
        epoch_end = t.state.batch_in_epoch == len(plan)
        if epoch_end:
            t.state.epoch += 1
            t.state.batch_in_epoch = 0
        stop = validate(t, logger, epoch_end)
        if stop is not None:
            done, t.stopped = True, stop
        if not done and out_of_time(t):
            done, t.stopped = True, "max_minutes"
        for remedy in t.remedies:
            remedy.end_epoch(t.view)
        t.save("last.pt")


def read_window(t: Trainer, window: TrainWindow, seconds: float) -> dict:
    """A log step's reads from the device, the only ones between checkpoints: whether a step since
    the last one diverged (TrainingDiverged, naming it), then the window's train/ means."""
    t.check_finite()
    return window.flush(seconds)


def time_left(t: Trainer, batches: int, clock: tuple[float, int]) -> str:
    """How long training will take at the speed measured since `clock` (the time and step this
    process started at): the steps left of this phase's epochs (or of train.max_steps)."""
    seconds = (time.perf_counter() - clock[0]) / max(t.state.step - clock[1], 1)
    left = (t.epoch_cap() - t.state.epoch) * batches - t.state.batch_in_epoch
    if t.s.train.max_steps is not None:
        left = min(left, t.s.train.max_steps - t.state.step)
    total = left * seconds
    when = f"{total:.0f} s" if total < 90 else f"{total / 60:.1f} min"
    return (f"about {when} of training left: {left} more steps at {seconds:.2f} s/step "
            f"(validation after each epoch and the test evaluation add to it)")


def already_stopped(t: Trainer) -> str | None:
    """Why a resumed run has nothing left to train (None: train on).

    A run stopped by its step cap, its wall-time budget, early stopping or its lr decays,
    and killed before its test evaluation finished, resumes straight to that evaluation.
    """
    cfg = t.s.train
    if cfg.max_steps is not None and t.state.step >= cfg.max_steps:
        return "max_steps"
    if cfg.early_stopping is not None and t.state.bad_epochs >= cfg.early_stopping:
        return "early_stopping"
    if t.phase is None and out_of_lr_decays(t):
        return "lr_decays"
    return "max_minutes" if t.state.step > 0 and out_of_time(t) else None


def out_of_time(t: Trainer) -> bool:
    """train.max_minutes spent (rank 0's clock decides, so every rank stops at the same step)."""
    budget = t.s.train.max_minutes
    if budget is None:
        return False
    over = t.dist.broadcast(t.elapsed() >= 60 * budget)
    if over:
        log.info("stopping: the wall-time budget train.max_minutes=%g is spent", budget)
    return over


def out_of_lr_decays(t: Trainer) -> bool:
    n = t.s.train.max_lr_decays
    if n is None or t.plateau is None or t.plateau.decays < n:
        return False
    log.info("stopping: the lr has been decayed %d times (train.max_lr_decays)", n)
    return True


def validate(t: Trainer, logger: MetricsLogger, epoch_end: bool) -> str | None:
    """Evaluate on valid, keep the best weights, decay the lr on a plateau; returns why
    training should stop now (None: go on)."""
    ev = dataclasses.replace(t.s.eval, iw_samples=t.s.eval.val_iw_samples, progress=False)
    metrics = evaluate(t.model, t.corpus["valid"], cfg=ev, full=False, dist=t.dist)
    metrics["lr"] = t.optimizer.param_groups[0]["lr"]
    monitor = t.s.train.monitor
    phase = t.phase
    if phase is not None:  # e.g. an autoencoder's -ELBO is no model-selection score
        metrics[phase.name] = 1
        monitor = phase.monitor
        if monitor is None:
            logger.log({f"val/{k}": v for k, v in metrics.items()}, t.state.step,
                       t.state.epoch)
            return None
    for remedy in t.remedies:
        remedy.after_validation(t.view, metrics, epoch_end)
    score = metrics[monitor]
    improved = score < t.state.best
    if improved:
        t.state.best = score
        t.save("best.pt")
    stop = None
    if epoch_end:  # a mid-epoch stop must not change the lr or patience a resumed run will see
        t.state.bad_epochs = 0 if improved else t.state.bad_epochs + 1
        phase_epochs = t.state.epoch - t.state.phase_epoch  # a phase counts its own
        if t.plateau is not None and t.plateau.step(score, phase_epochs):
            decay_lr(t)
        patience = t.s.train.early_stopping
        if patience is not None and t.state.bad_epochs >= patience:
            stop = "early_stopping"
            log.info("early stopping: no better validation %s for %d epochs",
                     t.s.train.monitor, t.state.bad_epochs)
        if phase is None and out_of_lr_decays(t):  # a phase ends instead
            stop = "lr_decays"
    logger.log({f"val/{k}": v for k, v in metrics.items()}, t.state.step, t.state.epoch)
    return stop


def decay_lr(t: Trainer) -> None:
    """The plateau rule fired: a smaller lr, from the best weights if so configured (a fresh
    optimizer then, as the papers' code makes one)."""
    lr = t.plateau.next_lr(t.optimizer.param_groups[0]["lr"])
    if t.s.optim.plateau_reload_best:
        t.load_best()
        t.optimizer = build_optimizer(t.model.parameters(), t.s.optim, lr)
    else:
        set_lr(t.optimizer, lr)
    log.info("lr decay %d: lr %.4g%s", t.plateau.decays, lr,
             ", from the best weights" if t.s.optim.plateau_reload_best else "")


class RemedyView:
    """The loop as remedies see it (vae_text.remedies.Loop): the model, the loop's position and
    the few actions a remedy takes, so that no remedy reaches into the trainer."""

    def __init__(self, trainer: Trainer):
        self._t = trainer

    model = property(lambda self: self._t.model)
    seed = property(lambda self: self._t.s.seed)
    step = property(lambda self: self._t.state.step)
    epoch = property(lambda self: self._t.state.epoch)
    phase_epochs = property(lambda self: self._t.state.epoch - self._t.state.phase_epoch)

    @property
    def phase(self) -> Phase | None:
        return self._t.phase

    def loss_of(self, batch: Batch, noise_seed: int) -> tuple[Tensor, float]:
        loss, stats = self._t.loss(batch, self._t.step_beta, noise_seed)
        return loss, stats["loss"]

    def inner_batch(self, i: int) -> tuple[Batch, int]:
        return self._t.inner_batch(i)

    def optimize(self, loss: Tensor, part: str | None = None) -> None:
        """An optimizer step on `loss` for a remedy's inner loop; with `part` that part alone
        (the other's gradients dropped, so its weights and Adam moments stay as they are)."""
        t = self._t
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if part is not None:
            update_only(t.model, part)
        if t.s.optim.clip_norm is not None:  # the norm of the part's gradients (None skipped)
            torch.nn.utils.clip_grad_norm_(t.model.parameters(), t.s.optim.clip_norm)
        t.optimizer.step()

    def save(self, name: str) -> None:
        self._t.save(name)

    def load_best(self) -> None:
        self._t.load_best()

    def new_phase(self) -> None:
        self._t.new_phase()

    def out_of_lr_decays(self) -> bool:
        return out_of_lr_decays(self._t)
