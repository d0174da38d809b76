"""Sweeps you can extend, resume and survive (Hydra multirun).

    python -m vae_text.train -m +experiment=ptb objective.kl_weight=0.25,0.5 hydra.sweep.dir=multirun/kl
    python -m vae_text.train -m +experiment=ptb objective.kl_weight=0.25,0.5,1.0 hydra.sweep.dir=multirun/kl

The second command, into the same sweep directory, skips the two finished jobs (it says so and
returns their stored score), resumes a job that was interrupted from its `checkpoints/last.pt`,
and runs the new value. A job that fails writes its error to `error.txt` in its folder and the
others run; the report shows it as failed. `multirun.yaml` of every earlier launch is kept in
`.multirun/`.

Job folders are named after their overrides, made safe to paste into a shell and into a Hydra
override (`train.resume=multirun/kl/objective.kl_weight-0.25`): `key-value` items joined by `+`
(see `job_dirname`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from vae_text.core.errors import VaeTextError

log = logging.getLogger("vae_text")

ERROR_FILE = "error.txt"
SKIPPED = ("results.json",)  # a job whose folder holds these is finished
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")
_FLOAT = re.compile(r"-?\d*\.\d+(e-?\d+)?")


def job_dirname(overrides: list[str] | Any, exclude: list[str] | Any = ()) -> str:
    """A job's folder name from its overrides (`key=value` strings): sorted `key-value` items
    joined by `+`, every character outside `A-Za-z0-9._+-` replaced by `_`, long floats (an
    Optuna trial's) cut to 4 significant digits; when anything was changed, a short hash of the
    exact overrides keeps two jobs apart. Keys in `exclude` (without `+`) are left out, as in
    Hydra's `override_dirname`. No overrides: `default`."""
    items = []
    for override in overrides:
        key, _, value = str(override).partition("=")
        key = key.lstrip("+~")
        if key in set(exclude):
            continue
        items.append((key, value))
    if not items:
        return "default"
    raw = "+".join(f"{k.replace('/', '.')}-{_short(v)}" for k, v in sorted(items))
    name = _UNSAFE.sub("_", raw)
    exact = "+".join(f"{k.replace('/', '.')}-{v}" for k, v in sorted(items))
    if name != exact or len(name) > 200:
        digest = hashlib.sha1(json.dumps(sorted(items)).encode()).hexdigest()[:8]
        name = f"{name[:190]}.{digest}"
    return name


def _short(value: str) -> str:
    if len(value) <= 8 or not _FLOAT.fullmatch(value):
        return value
    return f"{float(value):.4g}"


def register_resolver() -> None:
    """`${vae_text.job_dirname:${hydra.overrides.task},${hydra.job.config.override_dirname.exclude_keys}}`
    (train.yaml's `hydra.sweep.subdir`). Registered when this module is imported, which every
    process that runs a job does (a joblib worker too)."""
    if not OmegaConf.has_resolver("vae_text.job_dirname"):
        OmegaConf.register_new_resolver("vae_text.job_dirname", job_dirname)


register_resolver()


def in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    mode = HydraConfig.get().mode
    return mode is not None and mode.name == "MULTIRUN"


def run_job(cfg: DictConfig, train: Callable[[DictConfig], dict]) -> float:
    """One job of a sweep: skip it if finished, resume it if interrupted, else train; a failure
    is written to `error.txt` in the job's folder and the job returns NaN (the other jobs run;
    Optuna counts the trial as failed)."""
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    monitor = f"best_val_{cfg.train.monitor}"
    results = run_dir / "results.json"
    if results.is_file():
        score = json.loads(results.read_text()).get(monitor, math.nan)
        log.info("skipped %s: finished already (%s=%s)", run_dir.name, monitor, score)
        return float(score)
    if (run_dir / "checkpoints" / "last.pt").is_file() and cfg.train.resume is None:
        log.info("resuming %s from its checkpoints/last.pt", run_dir.name)
        with open_dict(cfg):
            cfg.train.resume = str(run_dir)
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    try:
        return float(train(cfg)[monitor])
    except Exception as err:  # noqa: BLE001 -- any failure is this job's, not the sweep's
        line = str(err) if isinstance(err, VaeTextError) else f"{type(err).__name__}: {err}"
        text = line if isinstance(err, VaeTextError) else traceback.format_exc()
        (run_dir / ERROR_FILE).write_text(text if text.endswith("\n") else text + "\n")
        log.error("job %s failed: %s (written to %s)", run_dir.name, line.splitlines()[0],
                  run_dir / ERROR_FILE)
        return math.nan


class SweepCallback(Callback):
    """Keeps the history of a sweep folder launched into more than once, and says at the end
    which jobs finished, were skipped or failed (exit status 1 if one failed, unless
    `fail_on_error` is false: a sweeper that judges failures itself, the Optuna search)."""

    def __init__(self, fail_on_error: bool = True) -> None:
        self.fail_on_error = fail_on_error

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        old = sweep / "multirun.yaml"
        if old.is_file():  # the sweeper is about to overwrite it
            keep = sweep / ".multirun"
            keep.mkdir(exist_ok=True)
            n = len(list(keep.glob("multirun.*.yaml")))
            old.rename(keep / f"multirun.{n}.yaml")
            log.info("extending the sweep in %s (earlier launches: %s)", sweep, keep)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        failed = sorted(p.parent for p in sweep.glob(f"*/{ERROR_FILE}"))
        if failed:
            print(f"{len(failed)} job(s) failed; their errors: "
                  + ", ".join(str(p / ERROR_FILE) for p in failed), file=sys.stderr)
            if self.fail_on_error:
                sys.exit(1)
