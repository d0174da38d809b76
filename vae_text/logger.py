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
