"""Training: `train(cfg)` is importable; `python -m vae_text.train` is a thin Hydra wrapper.

    python -m vae_text.train +experiment=ptb
    python -m vae_text.train -m +experiment=ptb objective.kl_weight=0.25,0.5,1.0

The run directory (Hydra's output dir) receives `config.yaml`, `metrics.jsonl`, `results.json`
and `checkpoints/{last,best}.pt`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from tqdm import tqdm

from vae_text.checkpoint import CHECKPOINT_DIR, load_checkpoint, resolve_checkpoint, save_checkpoint
from vae_text.config import (
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    RemedyConfig,
    TrainConfig,
    section,
)
from vae_text.data import (
    Batch,
    Corpus,
    DataConfig,
    Tokenizer,
    batch_plan,
    collate,
    iterate,
    load_corpus,
)
from vae_text.distributed import Dist, setup, teardown
from vae_text.errors import CheckpointError, ConfigError
from vae_text.logger import LoggerConfig, MetricsLogger, SilentLogger
from vae_text.metrics import EvalConfig, evaluate
from vae_text.model import TextVAE, word_dropout_rate
from vae_text.objective import kl_weight, shard_elbo_loss
from vae_text.remedies import aggressive_encoder_updates, reinitialize_decoder, update_only
from vae_text.tokenizer import TokenizerConfig
from vae_text.utils import CONFIG_PATH, cli, pick_device, write_json

log = logging.getLogger("vae_text")


@dataclass
class Settings:
    """The whole config, typed and validated: built before any data is read."""

    model: ModelConfig
    objective: ObjectiveConfig
    optim: OptimConfig
    train: TrainConfig
    data: DataConfig
    tokenizer: TokenizerConfig
    logger: LoggerConfig
    eval: EvalConfig
    remedy: RemedyConfig
    seed: int
    device: str

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> Settings:
        known = {"model", "objective", "optim", "train", "data", "tokenizer", "logger", "eval", "remedy",
                 "seed", "device"}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(f"{unknown[0]} is not a known top-level key: valid keys are {sorted(known)}")
        if not isinstance(cfg.get("seed"), int):
            raise ConfigError(f"seed={cfg.get('seed')!r} is invalid: it must be an integer")
        device = str(cfg.get("device", "auto"))
        if device != "auto" and not device.startswith(("cpu", "cuda", "mps")):
            raise ConfigError(f"device={device!r} is invalid: auto, cpu, cuda, cuda:N or mps")
        return cls(
            model=section(ModelConfig, cfg.get("model"), "model"),
            objective=section(ObjectiveConfig, cfg.get("objective"), "objective"),
            optim=section(OptimConfig, cfg.get("optim"), "optim"),
            train=section(TrainConfig, cfg.get("train"), "train"),
            data=section(DataConfig, cfg.get("data"), "data"),
            tokenizer=section(TokenizerConfig, cfg.get("tokenizer"), "tokenizer"),
            logger=section(LoggerConfig, cfg.get("logger"), "logger"),
            eval=dataclasses.replace(section(EvalConfig, cfg.get("eval"), "eval"), seed=cfg.seed,
                                     progress=bool(cfg.get("train", {}).get("progress", True))),
            remedy=section(RemedyConfig, cfg.get("remedy"), "remedy"),
            seed=cfg.seed,
            device=device,
        ).check()

    def check(self) -> Settings:
        """Checks across sections."""
        r = self.remedy
        if self.model.kind == "lm" and (r.aggressive or r.pretrain_epochs):
            raise ConfigError("remedy.aggressive / remedy.pretrain_epochs need a latent: "
                              "model.kind=lm has none")
        return self


@dataclass
class TrainState:
    """Everything about the loop's position that a resumed run must restore."""

    step: int = 0
    epoch: int = 0  # completed epochs
    batch_in_epoch: int = 0  # batches of the current epoch already trained on
    best: float = math.inf  # best validation score (train.monitor) so far
    bad_epochs: int = 0  # epochs since the best one (early stopping)
    pretraining: bool = False  # in the autoencoder phase of encoder pretraining
    phase_start: int = 0  # step at which the VAE phase began (the KL schedule counts from it)
    aggressive: bool = False  # aggressive inference training still on
    best_mi: float = -math.inf  # best validation MI while aggressive
    seconds: float = 0.0  # wall time spent in this run, over all its resumed pieces


def build_model(settings: ModelConfig, tokenizer: Tokenizer) -> TextVAE:
    t = tokenizer
    return TextVAE(settings, len(t), t.pad_id, t.bos_id, t.eos_id, t.unk_id)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


class Trainer:
    """Owns the model, optimizer and loop state of one run."""

    def __init__(self, cfg: DictConfig, settings: Settings, run_dir: Path, dist: Dist | None = None,
                 device: torch.device | None = None):
        self.cfg, self.s, self.run_dir = cfg, settings, run_dir
        self.dist = dist or Dist()
        self.device = device or pick_device(settings.device)
        resume = self._read_resume() if settings.train.resume else None
        self.corpus: Corpus = load_corpus(settings.data, settings.tokenizer)
        if resume is not None and resume["vocab"] != self.corpus.tokenizer.itos:
            raise CheckpointError(f"train.resume={settings.train.resume}: the checkpoint's vocabulary "
                                  f"differs from the one built now from data.{settings.data.source} "
                                  f"{settings.data.name}; resume with the same data and tokenizer")
        torch.manual_seed(settings.seed)
        random.seed(settings.seed)
        self.model = build_model(settings.model, self.corpus.tokenizer).to(self.device)
        self._new_optimizer()
        self.state = TrainState(pretraining=settings.remedy.pretrain_epochs > 0,
                                aggressive=settings.remedy.aggressive)
        if resume is not None:
            self._restore(resume)
        self.model.use_mean = self.state.pretraining or not settings.model.sample_z
        self.started, self.seconds_before = time.perf_counter(), self.state.seconds
        self.net = self.model  # what training calls: the model, or its DDP wrapper
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.plan: list = []
        self.stopped = "epochs"

    def _new_optimizer(self) -> None:
        o = self.s.optim
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=o.lr, betas=o.betas,
                                          weight_decay=o.weight_decay)
        self.plateau = None
        if o.plateau_factor is not None:
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, factor=o.plateau_factor, patience=o.plateau_patience, min_lr=o.min_lr)

    # --- checkpoints ----------------------------------------------------------------------------

    def _read_resume(self) -> dict:
        blob = load_checkpoint(self.s.train.resume, name="last.pt")
        if "optimizer" not in blob:
            raise CheckpointError(f"train.resume={self.s.train.resume}: this checkpoint holds weights "
                                  f"only; resume from a run's checkpoints/last.pt")
        saved = {**asdict(ModelConfig()), **blob["config"].get("model", {})}  # keys added since
        now = asdict(self.s.model)
        diff = sorted(k for k in now if saved.get(k) != now[k])
        if diff:
            raise CheckpointError(f"train.resume={self.s.train.resume}: model.{diff[0]} is "
                                  f"{saved.get(diff[0])!r} in the checkpoint but {now[diff[0]]!r} now; "
                                  f"resume with the same model config")
        return blob

    def _restore(self, blob: dict) -> None:
        self.model.load_state_dict(blob["model"])
        self.optimizer.load_state_dict(blob["optimizer"])
        if self.plateau is not None and blob.get("plateau") is not None:
            self.plateau.load_state_dict(blob["plateau"])
        self.state = TrainState(**blob["state"])
        set_rng_state(blob["rng"])
        log.info("resumed from %s at step %d (epoch %d)", self.s.train.resume, self.state.step,
                 self.state.epoch)

    def _blob(self, full: bool) -> dict:
        blob = {
            "model": self.model.state_dict(),
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "vocab": self.corpus.tokenizer.itos,
            "tokenizer": self.corpus.tokenizer.state(),
            "state": asdict(self.state),
        }
        if full:
            blob["optimizer"] = self.optimizer.state_dict()
            blob["plateau"] = self.plateau.state_dict() if self.plateau is not None else None
            blob["rng"] = rng_state()
        return blob

    def elapsed(self) -> float:
        """Wall time of the whole run: earlier pieces (before a resume) plus this process's."""
        return self.seconds_before + time.perf_counter() - self.started

    def save(self, name: str) -> None:
        self.state.seconds = self.elapsed()
        if not self.dist.main:
            return
        save_checkpoint(self.run_dir / CHECKPOINT_DIR / name, self._blob(full=name == "last.pt"))

    # --- the loop -------------------------------------------------------------------------------

    def beta(self) -> float:
        if self.state.pretraining:  # the autoencoder phase: no KL term at all
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
        eps = torch.randn(B, self.model.latent_size, generator=g) if self.model.has_latent else None
        word_noise = torch.rand(batch.tokens.shape, generator=g) if self.model.word_dropout_rate > 0 else None
        rows, share = d.rows(B), 1.0
        if rows.start == rows.stop:  # fewer sentences than ranks: take part with a zero loss
            rows, share = slice(0, 1), 0.0
        T = int(batch.lengths[rows].max())
        to = lambda t: None if t is None else t[rows, :T].to(self.device, non_blocking=True)  # noqa: E731
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.s.train.precision == "bf16"):
            out = self.net(to(batch.tokens), batch.lengths[rows].to(self.device),
                           eps=None if eps is None else eps[rows].to(self.device), word_noise=to(word_noise))
        out = dataclasses.replace(out, rec=out.rec.float(), kl=out.kl.float())
        rec, kl = out.rec * share, out.kl * share
        fb_sentence = torch.clamp(kl.sum(-1), min=o.free_bits).sum() * share
        totals = d.all_sum([rec.sum().item(), kl.sum().item(), fb_sentence.item(),
                            *kl.sum(0).tolist()])
        rec_sum, kl_sum, fb_sum, kl_dims = totals[0], totals[1], totals[2], torch.tensor(totals[3:])
        if o.free_bits <= 0:
            kl_term = kl_sum / B
        elif o.free_bits_mode == "sentence":
            kl_term = fb_sum / B
        else:
            kl_term = float(torch.clamp(kl_dims / B, min=o.free_bits / max(1, len(kl_dims))).sum())
        kl_dim_mean = (kl_dims / B).to(self.device, kl.dtype)
        surrogate = shard_elbo_loss(rec, kl, beta, B, o.free_bits, o.free_bits_mode, kl_dim_mean)
        stats = {"loss": rec_sum / B + beta * kl_term, "rec": rec_sum / B, "kl": kl_sum / B}
        return surrogate * d.world, stats  # DDP averages gradients over ranks: undo it

    def _noise_seed(self, i: int) -> int:
        return (self.s.seed * 1_000_003 + self.state.step * 1_009 + i) * 2 + 1

    def _inner_batch(self, i: int) -> tuple[Batch, int]:
        """A random batch of the current epoch for the aggressive inner loop, and its noise seed,
        drawn from (seed, step, i) alone so that a resumed run draws the same ones."""
        g = torch.Generator().manual_seed(self.s.seed * 1_000_003 + self.state.step * 1_009 + i)
        index = self.plan[int(torch.randint(len(self.plan), (1,), generator=g))]
        return collate(self.corpus["train"], index), self._noise_seed(i + 1)

    def train_step(self, batch) -> dict:
        beta = self.beta()
        m = self.s.model
        self.model.word_dropout_rate = word_dropout_rate(self.state.step, m.word_dropout,
                                                         m.word_dropout_end, m.word_dropout_steps)
        aggressive = self.state.aggressive and not self.state.pretraining
        inner = 0
        if aggressive:
            r = self.s.remedy

            def inner_loss(item: tuple[Batch, int]) -> tuple[Tensor, float]:
                loss, stats = self.loss(item[0], beta, item[1])
                return loss, stats["loss"]

            inner = aggressive_encoder_updates(
                self.model, self.optimizer, self._inner_batch, inner_loss,
                self.s.optim.clip_norm, r.aggressive_max_inner, r.aggressive_check_every)
        loss, stats = self.loss(batch, beta, self._noise_seed(0))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if aggressive:  # the outer step updates the decoder only
            update_only(self.model, "decoder")
        if self.s.optim.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.s.optim.clip_norm)
        self.optimizer.step()
        self.state.step += 1
        self.state.batch_in_epoch += 1
        return {**stats, "beta": beta, "inner_steps": inner, "tokens": batch.num_tokens,
                "sentences": len(batch)}

    def validate(self, logger: MetricsLogger, epoch_end: bool) -> bool:
        """Evaluate on valid, keep the best weights; returns True when training should stop."""
        cfg = dataclasses.replace(self.s.eval, iw_samples=self.s.eval.val_iw_samples, progress=False)
        metrics = evaluate(self.model, self.corpus["valid"], cfg=cfg, full=False, dist=self.dist)
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        if self.state.pretraining:  # the autoencoder's -ELBO is no model-selection score
            logger.log({f"val/{k}": v for k, v in metrics.items()} | {"val/pretraining": 1},
                       self.state.step, self.state.epoch)
            return False
        if self.state.aggressive and epoch_end:
            if "mi" in metrics and metrics["mi"] < self.state.best_mi:
                self.state.aggressive = False
                log.info("aggressive training off: validation MI stopped rising (%.3f < %.3f)",
                         metrics["mi"], self.state.best_mi)
            else:
                self.state.best_mi = metrics.get("mi", self.state.best_mi)
        metrics["aggressive"] = int(self.state.aggressive)
        score = metrics[self.s.train.monitor]
        improved = score < self.state.best
        if improved:
            self.state.best = score
            self.save("best.pt")
        stop = False
        if epoch_end:  # a mid-epoch stop must not change the lr or patience a resumed run will see
            self.state.bad_epochs = 0 if improved else self.state.bad_epochs + 1
            if self.plateau is not None:
                self.plateau.step(score)
            patience = self.s.train.early_stopping
            stop = patience is not None and self.state.bad_epochs >= patience
        logger.log({f"val/{k}": v for k, v in metrics.items()}, self.state.step, self.state.epoch)
        if stop:
            log.info("early stopping: no better validation %s for %d epochs", self.s.train.monitor,
                     self.state.bad_epochs)
        return stop

    def fit(self, logger: MetricsLogger) -> None:
        t, split = self.s.train, self.corpus["train"]
        epochs = self.s.remedy.pretrain_epochs + t.epochs  # the AE phase comes first
        self.stopped = self.already_stopped() or "epochs"  # why training ended, for results.json
        done = self.stopped != "epochs"
        while self.state.epoch < epochs and not done:
            self.plan = plan = batch_plan(split, t.batch_size, shuffle=True, seed=self.s.seed,
                                          epoch=self.state.epoch, pool=self.s.data.bucket_pool)
            bar = tqdm(total=len(plan), initial=self.state.batch_in_epoch,
                       disable=not (t.progress and self.dist.main),
                       desc=f"epoch {self.state.epoch + 1}/{epochs}", dynamic_ncols=True,
                       leave=False)
            window, started = _Window(), time.perf_counter()
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
                               self.state.epoch, echo=not t.progress)
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
            if self.validate(logger, epoch_end):
                done, self.stopped = True, "early_stopping"
            if not done and self.out_of_time():
                done, self.stopped = True, "max_minutes"
            if self.state.pretraining and self.state.epoch >= self.s.remedy.pretrain_epochs:
                self.end_pretraining()
            self.save("last.pt")

    def already_stopped(self) -> str | None:
        """Why a resumed run has nothing left to train (None: train on).

        A run stopped by its step cap, its wall-time budget or early stopping, and killed before
        its test evaluation finished, resumes straight to that evaluation instead of training on.
        """
        t = self.s.train
        if t.max_steps is not None and self.state.step >= t.max_steps:
            return "max_steps"
        if (t.early_stopping is not None and not self.state.pretraining
                and self.state.bad_epochs >= t.early_stopping):
            return "early_stopping"
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

    def end_pretraining(self) -> None:
        """Li et al. 2019: keep the autoencoder's encoder, start the decoder afresh, train the VAE."""
        self.save("pretrained.pt")
        with torch.random.fork_rng(devices=[]):  # the same fresh decoder on every rank
            torch.manual_seed(self.s.seed + self.state.step)
            reinitialize_decoder(self.model)
        self._new_optimizer()
        self.state.pretraining = False
        self.state.phase_start = self.state.step
        self.state.best, self.state.bad_epochs = math.inf, 0
        self.model.use_mean = not self.s.model.sample_z
        log.info("encoder pretraining done at step %d: decoder re-initialised, VAE phase starts",
                 self.state.step)

    def test(self, logger: MetricsLogger) -> dict:
        best = self.run_dir / CHECKPOINT_DIR / "best.pt"
        self.dist.barrier()  # rank 0 has written it
        if best.is_file():
            self.model.load_state_dict(load_checkpoint(best, map_location=self.device)["model"])
        metrics = evaluate(self.model, self.corpus["test"], self.corpus.tokenizer, self.s.eval,
                           dist=self.dist)
        if self.dist.main:
            write_json(self.run_dir / "eval_test.json", metrics)
        logger.log({f"test/{k}": v for k, v in metrics.items()}, self.state.step, self.state.epoch)
        return metrics


class _Window:
    """Running means of the train metrics between two log lines."""

    def __init__(self):
        self.sums, self.steps, self.tokens = {}, 0, 0

    def add(self, stats: dict) -> None:
        self.steps += 1
        self.tokens += stats["tokens"]
        for k in ("loss", "rec", "kl", "inner_steps"):
            self.sums[k] = self.sums.get(k, 0.0) + stats[k]
        self.beta = stats["beta"]

    def flush(self, seconds: float) -> dict:
        out = {k: v / self.steps for k, v in self.sums.items()}
        out.update(beta=self.beta, tokens_per_s=self.tokens / max(seconds, 1e-9))
        self.sums, self.steps, self.tokens = {}, 0, 0
        return out


def _named(cfg: LoggerConfig) -> LoggerConfig:
    """Under Hydra, default the wandb run name to the job's overrides and, in a sweep, the group
    to the sweep: every job of `-m` lands in one group, each named after what it changed."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return cfg
    hc = HydraConfig.get()
    sweep = hc.mode is not None and hc.mode.name == "MULTIRUN"
    return dataclasses.replace(
        cfg, run_name=cfg.run_name or hc.job.override_dirname or Path(hc.runtime.output_dir).name,
        group=cfg.group or (f"{Path(hc.sweep.dir).parent.name}/{Path(hc.sweep.dir).name}"
                            if sweep else None))


def train(cfg: DictConfig, run_dir: str | Path | None = None) -> dict:
    """Train, validate every epoch, test the best weights; returns the final metrics.

    `run_dir` defaults to Hydra's output directory (when called from the Hydra entry point).
    Started by torchrun, each process trains its share of every batch (`vae_text.distributed`);
    rank 0 alone writes the run directory.
    """
    settings = Settings.from_cfg(cfg)  # every config error surfaces here, before data is read
    hydra_dir = None
    if run_dir is None:
        from hydra.core.hydra_config import HydraConfig

        run_dir = hydra_dir = HydraConfig.get().runtime.output_dir
    d, device = setup(pick_device(settings.device))
    try:
        run_dir = Path(d.broadcast(str(run_dir)))  # ranks may have started in different seconds
        if not d.main:
            log.setLevel(logging.WARNING)
            if hydra_dir is not None and Path(hydra_dir).resolve() != run_dir.resolve():
                _remove_stray_dir(Path(hydra_dir))
        return _train(cfg, settings, run_dir, d, device)
    finally:
        teardown()


def _remove_stray_dir(path: Path) -> None:
    """The output directory Hydra made for a rank other than 0, if it holds nothing of value."""
    import shutil

    if path.is_dir() and {p.name for p in path.iterdir()} <= {".hydra", "train.log"}:
        shutil.rmtree(path, ignore_errors=True)


def _train(cfg: DictConfig, settings: Settings, run_dir: Path, d: Dist, device: torch.device) -> dict:
    last = run_dir / CHECKPOINT_DIR / "last.pt"
    resuming_here = (settings.train.resume is not None and last.exists()
                     and resolve_checkpoint(settings.train.resume, "last.pt").resolve() == last.resolve())
    if last.exists() and not resuming_here:  # never overwrite another run's work
        raise ConfigError(f"{run_dir} already holds a run (checkpoints/last.pt): choose another "
                          f"hydra.run.dir, or continue it with train.resume={run_dir}")
    d.barrier()  # every rank has checked before rank 0 writes anything
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if settings.train.num_threads:
        torch.set_num_threads(settings.train.num_threads)

    trainer = Trainer(cfg, settings, run_dir, d, device)
    n_params = sum(p.numel() for p in trainer.model.parameters())
    log.info("run dir %s | device %s | %d parameters | vocab %d | train %d sentences%s",
             run_dir, trainer.device, n_params, len(trainer.corpus.tokenizer), len(trainer.corpus["train"]),
             f" | {d.world} processes, global batch {settings.train.batch_size}" if d.active else "")
    if not d.main:
        logger = SilentLogger()
    else:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        logger = MetricsLogger(run_dir, _named(settings.logger), OmegaConf.to_container(cfg, resolve=True))
    failed = True
    try:
        trainer.fit(logger)
        train_seconds = trainer.elapsed()
        test = trainer.test(logger)
        results = {
            f"best_val_{settings.train.monitor}": trainer.state.best,
            "test": test,
            "steps": trainer.state.step,
            "epochs": trainer.state.epoch,
            "stopped": trainer.stopped,  # epochs | max_steps | early_stopping | max_minutes
            "train_seconds": train_seconds,  # training and validation, over all resumed pieces
            "test_seconds": trainer.elapsed() - train_seconds,
            "device": str(trainer.device),
            "processes": d.world,
            "parameters": n_params,
        }
        logger.log({"train_seconds": results["train_seconds"]}, trainer.state.step, echo=False)
        if d.main:
            write_json(run_dir / "results.json", results)
        failed = False
        return results
    finally:
        logger.close(failed=failed)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@cli
def main(cfg: DictConfig) -> float:
    results = train(cfg)
    return results[f"best_val_{cfg.train.monitor}"]  # what a sweeper minimises


if __name__ == "__main__":
    main()
