"""Where metrics go: the console, `metrics.jsonl` in the run directory, and wandb (optional).

Metric names are namespaced and stable (`train/loss`, `val/rec`, `test/neg_elbo`, ...). One JSON
object per line: {"step": ..., "epoch": ..., "<split>/<name>": value, ...}.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from vae_text.config import LoggerConfig

log = logging.getLogger("vae_text")


def named_after_job(cfg: LoggerConfig) -> LoggerConfig:
    """Under Hydra, default the wandb run name to the job's overrides and, in a sweep, the group
    to the sweep: every job of `-m` lands in one group, each named after what it changed."""
    import dataclasses

    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return cfg
    hc = HydraConfig.get()
    sweep = hc.mode is not None and hc.mode.name == "MULTIRUN"
    return dataclasses.replace(
        cfg, run_name=cfg.run_name or (not sweep and hc.job.override_dirname) or Path(hc.runtime.output_dir).name,
        group=cfg.group or (f"{Path(hc.sweep.dir).parent.name}/{Path(hc.sweep.dir).name}"
                            if sweep else None))


class MetricsLogger:
    def __init__(self, run_dir: Path, cfg: LoggerConfig, config: dict[str, Any]):
        self.path = run_dir / "metrics.jsonl"
        self.file = self.path.open("a", encoding="utf-8")
        self.wandb_run = None
        if cfg.name == "wandb":
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self.wandb_run = wandb.init(
                project=cfg.project, entity=cfg.entity, group=cfg.group,
                name=cfg.run_name or run_dir.name, tags=list(cfg.tags), mode=cfg.mode,
                dir=str(run_dir), config=config,
            )

    def log(self, metrics: dict[str, Any], step: int, epoch: int | None = None,
            echo: bool = True) -> None:
        record = {"step": step, **({"epoch": epoch} if epoch is not None else {}), **metrics}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                               step=step)
        if echo:
            log.info("step %d%s | %s", step, "" if epoch is None else f" epoch {epoch}",
                     " ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()
                              if isinstance(v, (int, float))))

    def close(self, failed: bool = False) -> None:
        self.file.close()
        if self.wandb_run is not None:
            self.wandb_run.finish(exit_code=1 if failed else 0)
            self.wandb_run = None


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class SilentLogger:
    """What ranks other than 0 log to in a distributed run: nothing (rank 0 logs the run)."""

    def log(self, metrics: dict[str, Any], step: int, epoch: int | None = None, echo: bool = True) -> None:
        pass

    def close(self, failed: bool = False) -> None:
        pass


class TrainWindow:
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
