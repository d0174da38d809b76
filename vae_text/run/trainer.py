"""One run's trainer: the model, optimizer, objective, remedies and loop position, and one step.

A training step draws the noise of the (global) batch, runs this process's rows of it through the
model under autocast, and hands the result to the objective (vae_text.objectives), which returns
the loss and its statistics: the trainer does no loss arithmetic. Remedies against posterior
collapse act through their hooks (vae_text.remedies) and the epoch loop lives in vae_text.run.loop.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor

from vae_text.core.distributed import Dist
from vae_text.core.errors import CheckpointError
from vae_text.data.batches import Batch, collate, to_device
from vae_text.data.corpus import Corpus, load_corpus
from vae_text.metrics import evaluate_to
from vae_text.model.textvae import build_model, word_dropout_rate
from vae_text.objectives import OBJECTIVES, StepInput, StepOutput
from vae_text.remedies import Phase, build_remedies
from vae_text.run import loop
from vae_text.run.checkpoint import (
    CHECKPOINT_DIR,
    load_checkpoint,
    read_resume,
    restore,
    save_checkpoint,
    training_blob,
)
from vae_text.run.compiled import step_forward
from vae_text.run.divergence import DivergenceWatch, clip_gradients
from vae_text.run.logger import MetricsLogger
from vae_text.run.optim import build_optimizer, plateau_rule

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
    """Owns the model, optimizer, objective and loop state of one run."""

    def __init__(self, cfg: DictConfig, settings, run_dir: Path, dist: Dist | None = None,
                 device: torch.device | None = None):
        from vae_text.core.utils import check_precision, pick_device

        self.cfg, self.s, self.run_dir = cfg, settings, run_dir
        self.dist = dist or Dist()
        self.device = device or pick_device(settings.device)
        check_precision(settings.train.precision, self.device)
        resume = read_resume(settings.train.resume, settings.model, settings.optim,
                             settings.objective) if settings.train.resume else None
        self.corpus: Corpus = load_corpus(settings.data, settings.tokenizer)
        if resume is not None and resume["vocab"] != self.corpus.tokenizer.itos:
            raise CheckpointError(f"train.resume={settings.train.resume}: the checkpoint's vocabulary "
                                  f"differs from the one built now from data.{settings.data.source} "
                                  f"{settings.data.name}; resume with the same data and tokenizer")
        torch.manual_seed(settings.seed)
        random.seed(settings.seed)
        self.model = build_model(settings.model, self.corpus.tokenizer).to(self.device)
        o = settings.objective
        self.objective = OBJECTIVES[o.name](o, **o.args)
        self.remedies = build_remedies(settings.remedy)
        self.view = loop.RemedyView(self)  # all that remedies see of the trainer
        self.optimizer = build_optimizer(self.model.parameters(), settings.optim)
        self.plateau = plateau_rule(settings.optim)
        self.state = TrainState()
        self.divergence = DivergenceWatch()
        if resume is not None:
            restore(self, resume)
            log.info("resumed from %s at step %d (epoch %d)", settings.train.resume,
                     self.state.step, self.state.epoch)
        self.model.use_mean = not settings.model.sample_z
        for remedy in self.remedies:
            remedy.start(self.view)
        self.started, self.seconds_before = time.perf_counter(), self.state.seconds
        self.net = self.model  # what training calls: the model, or its DDP wrapper
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.forward = step_forward(self.net, settings.train.compile, self.device,
                                    self.model.pad_id, self.corpus["train"].lengths)
        self.plan: list = []
        self.stopped = "epochs"

    @property
    def phase(self) -> Phase | None:
        """A remedy's phase in progress (an autoencoder phase), None in the model's own training."""
        return next((p for r in self.remedies if (p := r.phase()) is not None), None)

    def new_phase(self) -> None:
        """A fresh optimizer and model selection, the KL schedule restarting (a remedy's phase)."""
        self.optimizer = build_optimizer(self.model.parameters(), self.s.optim)
        self.plateau = plateau_rule(self.s.optim)
        self.state.phase_start, self.state.phase_epoch = self.state.step, self.state.epoch
        self.state.best, self.state.bad_epochs = math.inf, 0

    def epoch_cap(self) -> int:
        """The last epoch of the current phase: a remedy's phase, or train.epochs."""
        phase = self.phase
        return self.state.phase_epoch + (self.s.train.epochs if phase is None else phase.epochs)

    # --- checkpoints ----------------------------------------------------------------------------

    def elapsed(self) -> float:
        """Wall time of the whole run: earlier pieces (before a resume) plus this process's."""
        return self.seconds_before + time.perf_counter() - self.started

    def save(self, name: str) -> None:
        self.check_finite()  # weights a NaN step has touched are never written
        self.state.seconds = self.elapsed()
        if self.dist.main:
            save_checkpoint(self.run_dir / CHECKPOINT_DIR / name,
                            training_blob(self, full=name == "last.pt"))

    def load_best(self) -> None:
        best = self.run_dir / CHECKPOINT_DIR / "best.pt"
        self.dist.barrier()  # rank 0 has written it
        if best.is_file():
            self.model.load_state_dict(load_checkpoint(best, map_location=self.device)["model"])

    # --- one step -------------------------------------------------------------------------------

    def beta(self) -> float:
        """The objective's KL weight at the phase's step, then each remedy's say on it."""
        beta = self.objective.beta(self.state.step - self.state.phase_start)
        for remedy in self.remedies:
            beta = remedy.beta(self.view, beta)
        return beta

    def run_objective(self, batch: Batch, beta: float, noise_seed: int) -> StepOutput:
        """This rank's share of a (global) batch through the model and the objective.

        The loss returned is this share's: summed over ranks it is the whole batch's (DDP
        averages gradients, so the step scales it by the world size). The noise of z and of word
        dropout is drawn for the whole batch from `noise_seed`, so it does not depend on the ranks;
        an objective that needs K posterior draws gets every sentence K times, sentence-major.
        """
        B, K, d = len(batch), self.objective.samples, self.dist
        g = torch.Generator().manual_seed(noise_seed)
        eps = torch.randn(B * K, self.model.noise_size, generator=g) if self.model.has_latent else None
        word_noise = torch.rand((B * K, batch.tokens.shape[1]), generator=g) \
            if self.model.word_dropout_rate > 0 else None
        rows, share = d.rows(B), 1.0
        if rows.start == rows.stop:  # fewer sentences than ranks: take part with a zero loss
            rows, share = slice(0, 1), 0.0
        T, draws = batch.max_len(rows), slice(rows.start * K, rows.stop * K)  # known on the host
        tokens, lengths = batch.tokens[rows, :T], batch.lengths[rows]
        if K > 1:  # (R K, T): row r * K + k is the k-th draw of sentence r
            tokens, lengths = tokens.repeat_interleave(K, 0), lengths.repeat_interleave(K, 0)
        to = lambda t: None if t is None else to_device(t, self.device)  # noqa: E731
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.s.train.precision == "bf16"):
            out = self.forward(to(tokens), to(lengths), eps=None if eps is None else to(eps[draws]),
                               word_noise=None if word_noise is None else to(word_noise[draws, :T]))
        inp = StepInput(out, getattr(self.model, "prior", None), K, B, share,
                        self.state.step - self.state.phase_start, beta, self.dist.sum_on_device, rows.start)
        return self.objective(inp)

    def loss(self, batch: Batch, beta: float, noise_seed: int) -> tuple[Tensor, dict]:
        """The loss to differentiate (gradients averaged over ranks: the whole batch's) and the
        whole batch's statistics as numbers."""
        result = self.run_objective(batch, beta, noise_seed)
        return result.loss * self.dist.world, {k: float(v) for k, v in result.stats.items()}

    def noise_seed(self, i: int) -> int:
        return (self.s.seed * 1_000_003 + self.state.step * 1_009 + i) * 2 + 1

    def inner_batch(self, i: int) -> tuple[Batch, int]:
        """A random batch of the current epoch for a remedy's inner loop, and its noise seed,
        drawn from (seed, step, i) alone so that a resumed run draws the same ones."""
        g = torch.Generator().manual_seed(self.s.seed * 1_000_003 + self.state.step * 1_009 + i)
        index = self.plan[int(torch.randint(len(self.plan), (1,), generator=g))]
        return collate(self.corpus["train"], index), self.noise_seed(i + 1)

    def train_step(self, batch: Batch) -> dict:
        self.step_beta = beta = self.beta()  # also the beta of a remedy's inner steps (loss_of)
        m = self.s.model
        self.model.word_dropout_rate = word_dropout_rate(self.state.step, m.word_dropout,
                                                         m.word_dropout_end, m.word_dropout_steps)
        extra = {"inner_steps": 0}
        for remedy in self.remedies:
            extra.update(remedy.before_step(self.view))
        result = self.run_objective(batch, beta, self.noise_seed(0))
        self.optimizer.zero_grad(set_to_none=True)
        (result.loss * self.dist.world).backward()  # DDP averages gradients over ranks: undo it
        for remedy in self.remedies:
            remedy.after_backward(self.view)
        norm = clip_gradients(self.model, self.s.optim.clip_norm)
        # kept on the device, read at the next log step or checkpoint (self.check_finite): reading
        # it here would make the host wait for the GPU every step
        self.divergence.update(result.stats["loss"], norm, self.state.step + 1)
        self.optimizer.step()
        self.objective.after_step(result.stats)
        self.state.step += 1
        self.state.batch_in_epoch += 1
        # the statistics stay 0-dim device tensors: TrainWindow reads them once per log line
        return {**result.stats, **extra, "beta": beta, "tokens": batch.num_tokens,
                "sentences": len(batch)}

    def check_finite(self) -> None:
        """Stop (TrainingDiverged, naming the first bad step) if a step since the last check had
        a non-finite loss or gradient norm: one host read, at log steps and before checkpoints."""
        self.divergence.check(self.run_dir)

    # --- the loop -------------------------------------------------------------------------------

    def fit(self, logger: MetricsLogger) -> None:
        """Train until the epochs, steps, time or patience run out (vae_text.run.loop)."""
        loop.fit(self, logger)

    def test(self, logger: MetricsLogger) -> dict:
        self.load_best()  # eval_test.json; a test cut short resumes its IW-NLL (vae_text.metrics.progress)
        log.info("testing the best weights on %d test sentences (IW-NLL with K=%d)",
                 len(self.corpus["test"]), self.s.eval.iw_samples)
        metrics = evaluate_to(self.run_dir / "eval_test.json", self.model, self.corpus["test"],
                              self.corpus.tokenizer, self.s.eval, dist=self.dist)
        logger.log({f"test/{k}": v for k, v in metrics.items()}, self.state.step, self.state.epoch)
        return metrics
