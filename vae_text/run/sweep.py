"""Sweeps you can extend, resume and survive (Hydra multirun).

    python -m vae_text.train -m +experiment=ptb objective.kl_weight=0.25,0.5 hydra.sweep.dir=multirun/kl
    python -m vae_text.train -m +experiment=ptb objective.kl_weight=0.25,0.5,1.0 hydra.sweep.dir=multirun/kl

The second command, into the same sweep directory, skips the two finished jobs (it says so and
returns their stored score), resumes a job that was interrupted from its `checkpoints/last.pt`,
and runs the new value. A job that fails writes its error to `error.txt` in its folder and the
others run; the report shows it as failed. What identifies a job, and when a launch may touch
its folder: vae_text.run.sweepjob. `multirun.yaml` of every earlier launch is kept in
`.multirun/`, and each launch's record of its jobs in `.multirun/launches/<id>/`; a launch's
summary and exit status (1 if one of its jobs failed or was refused) are its own jobs', failed
jobs that earlier launches left are named as earlier.

Job folders are named after the overrides that vary in the sweep, made safe to paste into a
shell and into a Hydra override (`train.resume=multirun/kl/objective.kl_weight-0.25`):
`key-value` items joined by `+` (see `job_dirname`). The overrides every job of the first launch
into a sweep folder shares (`.multirun/constants.json`) name no job of that folder while they
keep their value, nor do the keys that say where the data lies or how a job runs (train.yaml's
`hydra.job.config.override_dirname.exclude_keys`, unless a launch sweeps them): a job's identity
covers those.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from vae_text.core.errors import ConfigError, VaeTextError
from vae_text.core.utils import check_writable, next_number, write_json
from vae_text.run.sweepjob import ERROR_FILE, LAUNCH_ENV

log = logging.getLogger("vae_text")

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


def _quote(value: str) -> str:
    """`value` as one quoted string of Hydra's override grammar."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _name_exclusions(config: DictConfig, sweep: Path) -> list[str]:
    """The override keys that name no job folder of this launch: those train.yaml lists under
    `hydra.job.config.override_dirname.exclude_keys` (where the data lies, how a job runs) unless
    this launch sweeps them, and the ones it holds at the value the sweep folder's first launch did."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    swept = {o.key_or_group for o in overrides if o.is_sweep_override()}
    swept |= set(OmegaConf.select(config, "hydra.sweeper.params", default=None) or {})
    constants = {o.key_or_group: o.get_value_element_as_str() for o in overrides
                 if o.key_or_group not in swept and not o.is_delete()}
    recorded = sweep / ".multirun" / "constants.json"
    if not recorded.is_file():
        write_json(recorded, constants)
    first = json.loads(recorded.read_text())
    same = {k for k, v in constants.items() if first.get(k) == v}
    listed = OmegaConf.select(config, "hydra.job.config.override_dirname.exclude_keys", default=None) or []
    return sorted((set(listed) - swept) | same)


def keep_launch_config(sweep: Path) -> Path | None:
    """The earlier launch's `multirun.yaml`, which the sweeper is about to overwrite, moves to
    `.multirun/multirun.<n>.yaml` (n = 0 for the first launch; one past the highest kept, so no
    kept file is ever replaced). Returns where it went (None: there was none)."""
    old = sweep / "multirun.yaml"
    if not old.is_file():
        return None
    keep = sweep / ".multirun"
    keep.mkdir(parents=True, exist_ok=True)
    numbers = (p.name.split(".")[1] for p in keep.glob("multirun.*.yaml"))
    target = keep / f"multirun.{next_number(numbers, first=0)}.yaml"
    old.rename(target)
    return target


def _check_sweeper(config: DictConfig) -> None:
    """vae_text's Optuna search checks its settings here too: Hydra calls this callback before it
    builds the sweeper, and a refused setting must leave no sweep folder behind."""
    settings = OmegaConf.to_container(config.hydra.sweeper, resolve=True)
    if str(settings.pop("_target_", "")).endswith("vae_text_search.OptunaSearchSweeper"):
        from vae_text.run.search import check_settings

        check_settings(**settings)


class SweepCallback(Callback):
    """Keeps the history of a sweep folder launched into more than once, names job folders after
    what varies, holds each job's `.hydra/` back until the job is accepted (vae_text.run.sweepjob),
    and says at the end which of this launch's jobs finished, were skipped, failed or were refused
    (exit status 1 if one failed or was refused, unless `fail_on_error` is false: a sweeper that
    judges failures itself, the Optuna search)."""

    def __init__(self, fail_on_error: bool = True) -> None:
        self.fail_on_error = fail_on_error

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        # Hydra 1.3 turns a callback's exception into a warning: a refusal ends the process here
        if sweep.exists() and not sweep.is_dir():
            print(f"error: hydra.sweep.dir={sweep} is a file, not a folder: choose another "
                  f"hydra.sweep.dir", file=sys.stderr)
            sys.exit(2)
        try:
            _check_sweeper(config)
            check_writable(sweep)
        except VaeTextError as err:
            print(f"error: {err}" if isinstance(err, ConfigError) else f"error: hydra.sweep.dir: {err}",
                  file=sys.stderr)
            sys.exit(2)
        keep = sweep / ".multirun"
        if keep_launch_config(sweep):
            log.info("extending the sweep in %s (earlier launches: %s)", sweep, keep)
        launch = (keep / "launches" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}").resolve()
        write_json(launch / "launch.json", {"pid": os.getpid(), "argv": sys.argv,
                                            "output_subdir": config.hydra.output_subdir})
        self.launch = launch
        excluded = ",".join(_quote(k) for k in _name_exclusions(config, sweep))
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.overrides.hydra.extend([  # each job's config is composed with these
                "hydra.output_subdir=null",  # its .hydra/ is written once the job is accepted
                f"++hydra.job.env_set.{LAUNCH_ENV}={_quote(str(launch))}",
                f"hydra.job.config.override_dirname.exclude_keys=[{excluded}]"])

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        jobs = [json.loads(p.read_text()) for p in sorted(self.launch.glob("[0-9]*.json"))]
        counts = {s: sum(j["status"] == s for j in jobs) for s in ("finished", "skipped", "failed", "refused")}
        print(f"sweep {sweep}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n), file=sys.stderr)
        mine = {j["job"] for j in jobs}
        for j in jobs:
            if j["status"] in ("failed", "refused"):
                print(f"  {j['status']}: {j['job']}: {j['line']}", file=sys.stderr)
        earlier = sorted(p.parent.name for p in sweep.glob(f"*/{ERROR_FILE}") if p.parent.name not in mine)
        if earlier:
            print(f"  failed in an earlier launch (not counted here): {', '.join(earlier)} "
                  f"(their {ERROR_FILE})", file=sys.stderr)
        if self.fail_on_error and (counts["failed"] or counts["refused"]):
            sys.exit(1)
