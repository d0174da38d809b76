"""The training loop: fit / step / validate / test of one run.

`Trainer` owns the model, the optimizer, the lr plateau rule, the remedies and the loop position
(`TrainState`); checkpoints are read and written through vae_text.checkpoint. Remedies against
posterior collapse act through their hooks (vae_text.remedies), so the loop has no remedy in it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor
from tqdm import tqdm

from vae_text.batches import Batch, batch_plan, collate, iterate
from vae_text.checkpoint import (
    CHECKPOINT_DIR,
    load_checkpoint,
    read_resume,
    restore,
    save_checkpoint,
    training_blob,
)
from vae_text.data import Corpus, load_corpus
from vae_text.distributed import Dist
from vae_text.divergence import clip_gradients, stop_if_diverged
from vae_text.errors import CheckpointError
from vae_text.logger import MetricsLogger, TrainWindow
from vae_text.metrics import evaluate, evaluate_to
from vae_text.model import build_model, word_dropout_rate
from vae_text.objective import elbo_loss, free_bits_kl, kl_weight
from vae_text.optim import build_optimizer, plateau_rule, set_lr
from vae_text.remedies import build_remedies

log = logging.getLogger("vae_text")


@dataclass
class TrainState:
    """Everything about the loop's position that a resumed run must restore."""

    step: int = 0
    epoch: int = 0  # completed epochs
    batch_in_epoch: int = 0  # batches of the current epoch already trained on
    best: float = math.inf  # best validation score (train.monitor) so far
    bad_epochs: int = 0  # epochs since the best one (early stopping)
    phase_start: int = 0  # step at which the current phase began (the KL schedule counts from it)
    phase_epoch: int = 0  # completed epochs when the current phase began
    seconds: float = 0.0  # wall time spent in this run, over all its resumed pieces


class Trainer:
    """Owns the model, optimizer and loop state of one run."""

    def __init__(self, cfg: DictConfig, settings, run_dir: Path, dist: Dist | None = None,
                 device: torch.device | None = None):
        from vae_text.utils import check_precision, pick_device

        self.cfg, self.s, self.run_dir = cfg, settings, run_dir
        self.dist = dist or Dist()
        self.device = device or pick_device(settings.device)
        check_precision(settings.train.precision, self.device)
        resume = read_resume(settings.train.resume, settings.model, settings.optim) if settings.train.resume else None
        self.corpus: Corpus = load_corpus(settings.data, settings.tokenizer)
        if resume is not None and resume["vocab"] != self.corpus.tokenizer.itos:
            raise CheckpointError(f"train.resume={settings.train.resume}: the checkpoint's vocabulary "
                                  f"differs from the one built now from data.{settings.data.source} "
                                  f"{settings.data.name}; resume with the same data and tokenizer")
        torch.manual_seed(settings.seed)
        random.seed(settings.seed)
        self.model = build_model(settings.model, self.corpus.tokenizer).to(self.device)
        self.remedies = build_remedies(settings.remedy)
        self.optimizer = build_optimizer(self.model.parameters(), settings.optim)
        self.plateau = plateau_rule(settings.optim)
        self.state = TrainState()
        if resume is not None:
            restore(self, resume)
            log.info("resumed from %s at step %d (epoch %d)", settings.train.resume,
                     self.state.step, self.state.epoch)
        self.model.use_mean = not settings.model.sample_z
        for remedy in self.remedies:
            remedy.start(self)
        self.started, self.seconds_before = time.perf_counter(), self.state.seconds
        self.net = self.model  # what training calls: the model, or its DDP wrapper
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.plan: list = []
        self.stopped = "epochs"

    @property
    def autoencoding(self) -> bool:
        """In a remedy's autoencoder phase: no KL term, z = mu, no model selection."""
        return any(r.autoencoding() for r in self.remedies)

    def new_phase(self) -> None:
        """A fresh optimizer and model selection, the KL schedule restarting (a remedy's phase)."""
        self.optimizer = build_optimizer(self.model.parameters(), self.s.optim)
        self.plateau = plateau_rule(self.s.optim)
        self.state.phase_start, self.state.phase_epoch = self.state.step, self.state.epoch
        self.state.best, self.state.bad_epochs = math.inf, 0

    def epoch_cap(self) -> int:
        """The last epoch of the current phase: a remedy's autoencoder phase, or train.epochs."""
        epochs = next((r.extra_epochs for r in self.remedies if r.autoencoding()),
                      self.s.train.epochs)
        return self.state.phase_epoch + epochs

    # --- checkpoints ----------------------------------------------------------------------------

    def elapsed(self) -> float:
        """Wall time of the whole run: earlier pieces (before a resume) plus this process's."""
        return self.seconds_before + time.perf_counter() - self.started

    def save(self, name: str) -> None:
        self.state.seconds = self.elapsed()
        if self.dist.main:
            save_checkpoint(self.run_dir / CHECKPOINT_DIR / name,
                            training_blob(self, full=name == "last.pt"))

    # --- one step -------------------------------------------------------------------------------

    def beta(self) -> float:
        if self.autoencoding:  # the autoencoder phase: no KL term at all
            return 0.0
        sched, o = self.s.objective.schedule, self.s.objective
        return kl_weight(self.state.step - self.state.phase_start, o.kl_weight, sched.name,
                         **sched.params)

    def loss(self, batch: Batch, beta: float, noise_seed: int) -> tuple[Tensor, dict]:
        """This rank's share of a (global) batch through the model.

        Returns the loss to differentiate, whose gradients averaged over ranks are those of the
        whole batch's loss, and the whole batch's statistics. The noise of z and of word dropout
        is drawn for the whole batch from `noise_seed`, so it does not depend on the ranks.
        """
        B, d, o = len(batch), self.dist, self.s.objective
        g = torch.Generator().manual_seed(noise_seed)
        eps = torch.randn(B, self.model.noise_size, generator=g) if self.model.has_latent else None
        word_noise = torch.rand(batch.tokens.shape, generator=g) if self.model.word_dropout_rate > 0 else None
        rows, share = d.rows(B), 1.0
        if rows.start == rows.stop:  # fewer sentences than ranks: take part with a zero loss
            rows, share = slice(0, 1), 0.0
        T = int(batch.lengths[rows].max())
        to = lambda t: None if t is None else t[rows, :T].to(self.device, non_blocking=True)  # noqa: E731
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.s.train.precision == "bf16"):
            out = self.net(to(batch.tokens), batch.lengths[rows].to(self.device),
                           eps=None if eps is None else eps[rows].to(self.device), word_noise=to(word_noise))
        rec, kl = out.rec.float() * share, out.kl.float() * share
        totals = d.all_sum(torch.cat([rec.sum()[None], kl.sum(0)]).tolist())  # one device sync
        kl_dims = torch.tensor(totals[1:])
        dim_mean = (kl_dims / B).to(self.device, kl.dtype)
        kl_term = free_bits_kl(kl, o.free_bits, o.free_bits_mode, dim_mean) * share
        kl_term_sum = d.all_sum([kl_term.item()])[0] if o.free_bits > 0 else float(kl_dims.sum())
        surrogate = elbo_loss(rec, kl, beta, o.free_bits, o.free_bits_mode, B, dim_mean)
        stats = {"loss": (totals[0] + beta * kl_term_sum) / B, "rec": totals[0] / B,
                 "kl": float(kl_dims.sum()) / B}
        return surrogate * d.world, stats  # DDP averages gradients over ranks: undo it

    def noise_seed(self, i: int) -> int:
        return (self.s.seed * 1_000_003 + self.state.step * 1_009 + i) * 2 + 1

    def inner_batch(self, i: int) -> tuple[Batch, int]:
        """A random batch of the current epoch for a remedy's inner loop, and its noise seed,
        drawn from (seed, step, i) alone so that a resumed run draws the same ones."""
        g = torch.Generator().manual_seed(self.s.seed * 1_000_003 + self.state.step * 1_009 + i)
        index = self.plan[int(torch.randint(len(self.plan), (1,), generator=g))]
        return collate(self.corpus["train"], index), self.noise_seed(i + 1)

    def train_step(self, batch: Batch) -> dict:
        beta = self.beta()
        m = self.s.model
        self.model.word_dropout_rate = word_dropout_rate(self.state.step, m.word_dropout,
                                                         m.word_dropout_end, m.word_dropout_steps)
        extra = {"inner_steps": 0}
        for remedy in self.remedies:
            extra.update(remedy.before_step(self, beta))
        loss, stats = self.loss(batch, beta, self.noise_seed(0))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for remedy in self.remedies:
            remedy.after_backward(self)
        norm = clip_gradients(self.model, self.s.optim.clip_norm)  # before the step: NaN stops here
        stop_if_diverged(stats["loss"], norm, self.run_dir, self.state.step + 1)
        self.optimizer.step()
        self.state.step += 1
        self.state.batch_in_epoch += 1
        return {**stats, **extra, "beta": beta, "tokens": batch.num_tokens, "sentences": len(batch)}

    # --- validation -----------------------------------------------------------------------------

    def validate(self, logger: MetricsLogger, epoch_end: bool) -> str | None:
        """Evaluate on valid, keep the best weights, decay the lr on a plateau; returns why
        training should stop now (None: go on)."""
        cfg = dataclasses.replace(self.s.eval, iw_samples=self.s.eval.val_iw_samples, progress=False)
        metrics = evaluate(self.model, self.corpus["valid"], cfg=cfg, full=False, dist=self.dist)
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        monitor = self.s.train.monitor
        if self.autoencoding:  # the autoencoder's -ELBO is no model-selection score
            metrics["pretraining"] = 1
            monitor = next(r.phase_monitor() for r in self.remedies if r.autoencoding())
            if monitor is None:
                logger.log({f"val/{k}": v for k, v in metrics.items()}, self.state.step,
                           self.state.epoch)
                return None
        for remedy in self.remedies:
            remedy.after_validation(self, metrics, epoch_end)
        score = metrics[monitor]
        improved = score < self.state.best
        if improved:
            self.state.best = score
            self.save("best.pt")
        stop = None
        if epoch_end:  # a mid-epoch stop must not change the lr or patience a resumed run will see
            self.state.bad_epochs = 0 if improved else self.state.bad_epochs + 1
            phase_epochs = self.state.epoch - self.state.phase_epoch  # a phase counts its own
            if self.plateau is not None and self.plateau.step(score, phase_epochs):
                self.decay_lr()
            patience = self.s.train.early_stopping
            if patience is not None and self.state.bad_epochs >= patience:
                stop = "early_stopping"
                log.info("early stopping: no better validation %s for %d epochs",
                         self.s.train.monitor, self.state.bad_epochs)
            if not self.autoencoding and self.out_of_lr_decays():  # an AE phase ends instead
                stop = "lr_decays"
        logger.log({f"val/{k}": v for k, v in metrics.items()}, self.state.step, self.state.epoch)
        return stop

    def decay_lr(self) -> None:
        """The plateau rule fired: a smaller lr, from the best weights if so configured (a fresh
        optimizer then, as the papers' code makes one)."""
        lr = self.plateau.next_lr(self.optimizer.param_groups[0]["lr"])
        if self.s.optim.plateau_reload_best:
            self.load_best()
            self.optimizer = build_optimizer(self.model.parameters(), self.s.optim, lr)
        else:
            set_lr(self.optimizer, lr)
        log.info("lr decay %d: lr %.4g%s", self.plateau.decays, lr,
                 ", from the best weights" if self.s.optim.plateau_reload_best else "")

    def load_best(self) -> None:
        best = self.run_dir / CHECKPOINT_DIR / "best.pt"
        self.dist.barrier()  # rank 0 has written it
        if best.is_file():
            self.model.load_state_dict(load_checkpoint(best, map_location=self.device)["model"])

    # --- the loop -------------------------------------------------------------------------------

    def fit(self, logger: MetricsLogger) -> None:
        t, split = self.s.train, self.corpus["train"]
        self.stopped = self.already_stopped() or "epochs"  # why training ended, for results.json
        done = self.stopped != "epochs"
        while self.state.epoch < self.epoch_cap() and not done:
            self.plan = plan = batch_plan(split, t.batch_size, shuffle=True, seed=self.s.seed,
                                          epoch=self.state.epoch, pool=self.s.data.bucket_pool)
            if self.state.batch_in_epoch > len(plan):  # a resume with other data or batch size
                raise CheckpointError(
                    f"train.resume={t.resume}: the checkpoint stopped at batch "
                    f"{self.state.batch_in_epoch} of an epoch that now has {len(plan)} batches; "
                    f"resume with the same data (data.max_sentences, data.max_len) and train.batch_size")
            bar = tqdm(total=len(plan), initial=self.state.batch_in_epoch,
                       disable=not (t.progress and self.dist.main),
                       desc=f"epoch {self.state.epoch + 1}/{self.epoch_cap()}", dynamic_ncols=True,
                       leave=False)
            self.window = window = self.window if self.state.batch_in_epoch else TrainWindow()  # resumed
            started = time.perf_counter()
            for batch in iterate(split, plan, start=self.state.batch_in_epoch):
                window.add(self.train_step(batch))
                bar.update(1)
                if self.state.step % t.log_every == 0:
                    stats = window.flush(time.perf_counter() - started)
                    started = time.perf_counter()
                    bar.set_postfix(loss=f"{stats['loss']:.2f}", rec=f"{stats['rec']:.2f}",
                                    kl=f"{stats['kl']:.2f}", beta=f"{stats['beta']:.3f}",
                                    tok_s=f"{stats['tokens_per_s']:.0f}")
                    logger.log({f"train/{k}": v for k, v in stats.items()}, self.state.step,
                               self.state.epoch, echo="file" if t.progress else True)
                if t.checkpoint_every and self.state.step % t.checkpoint_every == 0:
                    self.save("last.pt")
                if t.max_steps is not None and self.state.step >= t.max_steps:
                    done, self.stopped = True, "max_steps"
                    break
                if self.state.step % t.log_every == 0 and self.out_of_time():
                    done, self.stopped = True, "max_minutes"
                    break
            bar.close()
            epoch_end = self.state.batch_in_epoch == len(plan)
            if epoch_end:
                self.state.epoch += 1
                self.state.batch_in_epoch = 0
            stop = self.validate(logger, epoch_end)
            if stop is not None:
                done, self.stopped = True, stop
            if not done and self.out_of_time():
                done, self.stopped = True, "max_minutes"
            for remedy in self.remedies:
                remedy.end_epoch(self)
            self.save("last.pt")

    def already_stopped(self) -> str | None:
        """Why a resumed run has nothing left to train (None: train on).

        A run stopped by its step cap, its wall-time budget, early stopping or its lr decays,
        and killed before its test evaluation finished, resumes straight to that evaluation.
        """
        t = self.s.train
        if t.max_steps is not None and self.state.step >= t.max_steps:
            return "max_steps"
        if t.early_stopping is not None and self.state.bad_epochs >= t.early_stopping:
            return "early_stopping"
        if not self.autoencoding and self.out_of_lr_decays():
            return "lr_decays"
        return "max_minutes" if self.state.step > 0 and self.out_of_time() else None

    def out_of_time(self) -> bool:
        """train.max_minutes spent (rank 0's clock decides, so every rank stops at the same step)."""
        budget = self.s.train.max_minutes
        if budget is None:
            return False
        over = self.dist.broadcast(self.elapsed() >= 60 * budget)
        if over:
            log.info("stopping: the wall-time budget train.max_minutes=%g is spent", budget)
        return over

    def out_of_lr_decays(self) -> bool:
        n = self.s.train.max_lr_decays
        if n is None or self.plateau is None or self.plateau.decays < n:
            return False
        log.info("stopping: the lr has been decayed %d times (train.max_lr_decays)", n)
        return True

    def test(self, logger: MetricsLogger) -> dict:
        self.load_best()  # eval_test.json; a test cut short resumes its IW-NLL (vae_text.evalprogress)
        metrics = evaluate_to(self.run_dir / "eval_test.json", self.model, self.corpus["test"],
                              self.corpus.tokenizer, self.s.eval, dist=self.dist)
        logger.log({f"test/{k}": v for k, v in metrics.items()}, self.state.step, self.state.epoch)
        return metrics
