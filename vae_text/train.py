"""Training: `train(cfg)` is importable; `python -m vae_text.train` is a thin Hydra wrapper.

    python -m vae_text.train +experiment=ptb
    python -m vae_text.train -m +experiment=ptb objective.kl_weight=0.25,0.5,1.0

The run directory (Hydra's output dir) receives `config.yaml`, `metrics.jsonl`, `results.json`
and `checkpoints/{last,best}.pt`. The loop itself is vae_text.run.trainer; what a resume may
change in a run directory, and when, is vae_text.run.record.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from vae_text.config import TrainRunConfig
from vae_text.core.distributed import Dist, setup, teardown
from vae_text.core.errors import VaeTextError
from vae_text.core.utils import CONFIG_PATH, atomic_write, cli, default_threads, write_json
from vae_text.run.command import hydra_entry
from vae_text.run.divergence import TrainingDiverged
from vae_text.run.logger import (
    MetricsLogger,
    SilentLogger,
    check_wandb_login,
    closing_summary,
    kept_lines,
    named_after_job,
)
from vae_text.run.parts import train_settings
from vae_text.run.record import accept, commit, stage_finished, staging
from vae_text.run.rundir import check_reuse, claim, release, resumes_here
from vae_text.run.sweep import in_sweep
from vae_text.run.sweepjob import run_job
from vae_text.run.trainer import Trainer

log = logging.getLogger("vae_text")


def train(cfg: DictConfig, run_dir: str | Path | None = None) -> dict:
    """Train, validate every epoch, test the best weights; returns the final metrics.

    `run_dir` defaults to Hydra's output directory (when called from the Hydra entry point).
    Started by torchrun, each process trains its share of every batch (`vae_text.core.distributed`);
    rank 0 alone writes the run directory.
    """
    settings = train_settings(cfg)  # every config error surfaces here, before data is read
    check_wandb_login(settings.logger)
    hydra_dir = None
    if run_dir is None:
        from hydra.core.hydra_config import HydraConfig

        run_dir = hydra_dir = HydraConfig.get().runtime.output_dir
    d, device = setup(settings.device)
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


def _train(cfg: DictConfig, settings: TrainRunConfig, run_dir: Path, d: Dist, device: torch.device) -> dict:
    if not d.main:  # rank 0 locks the folder and checks it (vae_text.run.rundir)
        check_reuse(run_dir, settings.train.resume)
    owned = claim(run_dir, settings.train.resume) if d.main else False
    try:
        return _train_locked(cfg, settings, run_dir, d, device)
    except VaeTextError:
        if owned:  # a start-up error leaves no folder behind
            release(run_dir, discard=True)
            owned = False
        raise
    finally:
        if owned:
            release(run_dir)


def _train_locked(cfg: DictConfig, settings: TrainRunConfig, run_dir: Path, d: Dist,
                  device: torch.device) -> dict:
    # the guard's own test (vae_text.run.rundir), whose answer also sent Hydra's files to staging
    resuming_here = resumes_here(run_dir, settings.train.resume)
    # a finished run goes on in a staging folder and is replaced only when the piece finishes
    finished = resuming_here and (run_dir / "results.json").is_file()
    work = staging(run_dir) if finished else run_dir
    if finished and d.main:
        stage_finished(run_dir)
    d.barrier()  # every rank has checked before rank 0 writes anything
    torch.set_num_threads(settings.train.num_threads or default_threads())

    trainer = Trainer(cfg, settings, work, d, device)
    if resuming_here and not finished and d.main:
        accept(run_dir)  # checkpoint, config and data checked: the resume joins the record
    n_params = sum(p.numel() for p in trainer.model.parameters())
    log.info("run dir %s | device %s | %d parameters | vocab %d | train %d sentences%s",
             run_dir, trainer.device, n_params, len(trainer.corpus.tokenizer), len(trainer.corpus["train"]),
             f" | {d.world} processes, global batch {settings.train.batch_size}" if d.active else "")
    if not d.main:
        logger = SilentLogger()
    else:
        atomic_write(work / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        keep = kept_lines(work / "metrics.jsonl", getattr(trainer, "resume_blob", None),
                          trainer.state.step) if resuming_here else None
        logger = MetricsLogger(work, named_after_job(settings.logger),
                               OmegaConf.to_container(cfg, resolve=True), keep_lines=keep)
        trainer.logger = logger  # its line count goes into checkpoints: metrics.jsonl resumes exactly
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
            "stopped": trainer.stopped,  # epochs | max_steps | early_stopping | max_minutes | lr_decays
            "train_seconds": train_seconds,  # training and validation, over all resumed pieces
            "test_seconds": trainer.elapsed() - train_seconds,
            "device": str(trainer.device),
            "processes": d.world,
            "parameters": n_params,
        }
        logger.log({"train_seconds": results["train_seconds"]}, trainer.state.step, echo=False)
        if d.main:
            write_json(work / "results.json", results)
        failed = False
    except TrainingDiverged as err:
        if finished:  # the piece is discarded (vae_text.run.rundir.release): the run stays as it was
            raise TrainingDiverged(err.cause, f"the resumed piece is discarded and {run_dir} is as "
                                              f"it was") from None
        raise
    finally:
        logger.close(failed=failed)
    if finished and d.main:
        commit(run_dir)
    if d.main:
        log.info("%s", closing_summary(results, run_dir, settings.train.monitor))
    return results


@hydra_entry
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@cli
def main(cfg: DictConfig) -> float:
    if in_sweep():  # finished jobs skipped, interrupted ones resumed, a failure kept in its folder
        return run_job(cfg, train)
    from hydra.core.hydra_config import HydraConfig

    run_dir = HydraConfig.get().runtime.output_dir
    try:
        results = train(cfg)
    except VaeTextError:
        release(run_dir, discard=True)  # the lock RunDirGuard took
        raise  # `cli` prints it as one line, exit status 2
    finally:
        release(run_dir)  # emptied lock file, an unaccepted resume's staging folder removed
    return results[f"best_val_{cfg.train.monitor}"]  # what a sweeper minimises


if __name__ == "__main__":
    main()
