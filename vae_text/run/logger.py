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

import torch
from torch import Tensor

from vae_text.config import LoggerConfig
from vae_text.core.errors import ConfigError
from vae_text.core.utils import _finite, atomic_write
from vae_text.metrics.information import mi_note

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


def check_wandb_login(cfg: LoggerConfig, option: str = "logger.mode") -> None:
    """`logger=wandb logger.mode=online` needs an API key: without one (WANDB_API_KEY, a
    WANDB_IDENTITY_TOKEN_FILE, or the netrc entry `wandb login` writes for the server) say so in
    one line before any data is read, where wandb.init would raise a traceback after it. Reads
    the environment and the netrc file only: nothing is sent anywhere. `option`: the setting's
    name in the command (vae_text.report's is --wandb-mode)."""
    if cfg.name != "wandb" or cfg.mode != "online":
        return
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return
    import netrc
    from urllib.parse import urlsplit

    host = urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        if host and path.is_file() and (netrc.netrc(str(path)).authenticators(host) or ("",) * 3)[2]:
            return
    except (OSError, netrc.NetrcParseError):
        pass  # an unreadable netrc holds no key we can use
    raise ConfigError(f"{option}=online needs a wandb API key and none is set for {host}: run "
                      f"`wandb login` (or set WANDB_API_KEY), or log offline with {option}=offline "
                      f"(`wandb sync` uploads later)")


class MetricsLogger:
    """`keep_lines`: a resumed run keeps that many lines of the file (those its checkpoint had
    seen written) and writes the rest again; None starts the file afresh."""

    def __init__(self, run_dir: Path, cfg: LoggerConfig, config: dict[str, Any],
                 keep_lines: int | None = None):
        self.path = run_dir / "metrics.jsonl"
        kept = []
        if keep_lines and self.path.exists():
            kept = self.path.read_text(encoding="utf-8").splitlines(keepends=True)[:keep_lines]
        atomic_write(self.path, "".join(kept))
        self.lines = len(kept)
        self.file = self.path.open("a", encoding="utf-8")
        self.wandb_run = None
        self._said: dict[str, Any] = {}  # constant fields echoed already
        if cfg.name == "wandb":
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self.wandb_run = wandb.init(
                project=cfg.project, entity=cfg.entity, group=cfg.group,
                name=cfg.run_name or run_dir.name, tags=list(cfg.tags), mode=cfg.mode,
                dir=str(run_dir), config=config,
            )

    def log(self, metrics: dict[str, Any], step: int, epoch: int | None = None,
            echo: bool | str = True) -> None:
        """One record in metrics.jsonl (and wandb); `echo`: also a log line (True), a line in
        the log file only (\"file\": while the progress bar holds the console), or none."""
        record = {"step": step, **({"epoch": epoch} if epoch is not None else {}), **metrics}
        self.file.write(json.dumps(_finite(record)) + "\n")  # NaN and infinity: null (valid JSON)
        self.file.flush()
        self.lines += 1
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                               step=step)
        if echo:
            fields = " ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()
                              if isinstance(v, (int, float)) and self._news(k, v))
            line = f"step {step}{'' if epoch is None else f' epoch {epoch}'} | {fields}"
            if echo == "file":
                _to_log_files(line)
            else:
                log.info("%s", line)

    def _news(self, key: str, value: Any) -> bool:
        """False for a constant field (the split's size, the AU threshold) said before with the
        same value: validation lines stay short."""
        if key.rpartition("/")[2] not in CONSTANT_FIELDS:
            return True
        seen, self._said[key] = self._said.get(key), value
        return seen != value

    def close(self, failed: bool = False) -> None:
        self.file.close()
        if self.wandb_run is not None:
            offline = self.wandb_run.settings.mode == "offline" or getattr(
                self.wandb_run.settings, "_offline", False)
            folder = Path(self.wandb_run.dir).parent  # wandb/offline-run-<time>-<id>
            self.wandb_run.finish(exit_code=1 if failed else 0)
            self.wandb_run = None
            if offline:
                log.info("wandb: offline run in %s; upload it with: wandb sync %s", folder, folder)


CONSTANT_FIELDS = {"sentences", "tokens", "model_tokens", "au_threshold", "mi_sentences"}


def _to_log_files(line: str) -> None:
    """`line` as an INFO record of the "vae_text" logger, to the file handlers only (Hydra's
    train.log), not to the console."""
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, line, (), None)
    for logger in (log, logging.getLogger()):
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
                handler.handle(record)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def kept_lines(path: Path, blob: dict | None, step: int) -> int:
    """How many lines of a run's metrics.jsonl the checkpoint it resumes from had seen written:
    the lines a killed run wrote after it go, as the resumed run writes them again."""
    if blob is not None and "metrics_lines" in blob:
        return blob["metrics_lines"]
    n = 0  # a checkpoint of an older vae_text: the lines up to its step, before any test line
    for line in (path.read_text(encoding="utf-8").splitlines() if path.exists() else []):
        try:
            record = json.loads(line)
        except ValueError:
            break
        if record.get("step", 0) > step or any(k.startswith("test/") for k in record):
            break
        n += 1
    return n


class SilentLogger:
    """What ranks other than 0 log to in a distributed run: nothing (rank 0 logs the run)."""

    lines = 0

    def log(self, metrics: dict[str, Any], step: int, epoch: int | None = None, echo: bool = True) -> None:
        pass

    def close(self, failed: bool = False) -> None:
        pass


class TrainWindow:
    """Running means of the train metrics between two log lines.

    The step's statistics arrive as 0-dim device tensors and are summed there; `flush` reads them
    back to the host in one copy, once per log line, so the steps in between never wait for the
    device. (Remedies' counts and beta are Python numbers and stay so.)
    """

    def __init__(self):
        self.sums, self.steps, self.tokens, self.rec_nats = {}, 0, 0, 0.0

    def add(self, stats: dict) -> None:
        self.steps += 1
        self.tokens += stats["tokens"]
        self.rec_nats = self.rec_nats + stats["rec"] * stats["sentences"]  # rec: a mean over sentences
        for k, v in stats.items():  # the objective's statistics and the remedies' counts
            if k not in ("beta", "tokens", "sentences"):
                self.sums[k] = self.sums.get(k, 0.0) + v
        self.beta = stats["beta"]

    def flush(self, seconds: float) -> dict:
        sums = read({**self.sums, "rec_nats": self.rec_nats})
        rec_nats = sums.pop("rec_nats")
        out = {k: v / self.steps for k, v in sums.items()}
        # per token: bucketed batches of long (or short) sentences make per-sentence rec jump
        out.update(beta=self.beta, tokens_per_s=self.tokens / max(seconds, 1e-9),
                   rec_per_token=rec_nats / max(self.tokens, 1))
        self.sums, self.steps, self.tokens, self.rec_nats = {}, 0, 0, 0.0
        return out


def read(values: dict[str, Any]) -> dict[str, float]:
    """`values` as Python numbers, its tensors (0-dim) read back in one float64 copy."""
    tensors = {k: v for k, v in values.items() if isinstance(v, Tensor)}
    if tensors:
        device = next(iter(tensors.values())).device
        numbers = torch.stack([t.detach().to(device, torch.float64).reshape(())
                               for t in tensors.values()]).tolist()
        values = {**values, **dict(zip(tensors, numbers, strict=True))}
    return values


def closing_summary(results: dict, run_dir: Path, monitor: str) -> str:
    """The lines a finished run ends with: best validation score, test metrics, wall time, files."""
    test = results["test"]
    shown = [("rec", "rec"), ("kl", "KL"), ("neg_elbo", "-ELBO"), ("nll_iw", "IW-NLL"),
             ("ppl_iw", "IW-PPL"), ("nll", "NLL"), ("ppl", "PPL"), ("mi", "MI"), ("au", "AU")]
    numbers = ", ".join(f"{label} {_fmt(test[k])}{mi_note(test[k]) if k == 'mi' else ''}"
                        for k, label in shown if k in test)
    k = f" (K={test['iw_samples']})" if "iw_samples" in test else ""
    minutes = (results["train_seconds"] + results["test_seconds"]) / 60
    return "\n".join([
        f"done: {results['epochs']} epochs, {results['steps']} steps, ended by {results['stopped']}; "
        f"wall time {minutes:.1f} min",
        f"  best validation {monitor}: {_fmt(results[f'best_val_{monitor}'])}",
        f"  test{k}: {numbers} (rec to IW-NLL in nats per sentence)",
        f"  files: {run_dir}/ checkpoints/best.pt, eval_test.json, results.json, metrics.jsonl",
    ])
