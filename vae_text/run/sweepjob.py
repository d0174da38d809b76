"""One job of a sweep: what identifies it, and when a launch may touch its folder.

A job is identified by everything that changes its result: its resolved config (data,
tokenizer, model, objective, optimizer, seed, remedies, training length, evaluation) without the
keys that only say where or how fast it runs (`IGNORED`), plus a fingerprint of the data itself
(size and sha256 of each split file), so that `data.dir` may move but not change. The identity is
kept in the job's `job.json`, with one line per piece that trained it (launch, device, threads).

A launch decides, before it writes anything into a job's folder:
- finished (`results.json`) with the same identity: skipped, its stored score returned;
- finished or interrupted with another identity: refused with one line (its score is not
  reused, its files not touched);
- locked by another launch that is running it: refused, nothing written;
- otherwise the launch locks the folder and runs the job (resuming an interrupted one from its
  `checkpoints/last.pt`). Only then are the job's `.hydra/` (a later piece's under
  `.hydra/earlier/<n>/`) and `train.log` written; a failure goes to its `error.txt`.
Each job's outcome goes into its launch's own record (`<sweep>/.multirun/launches/<id>/`), from
which the launch's summary and exit status are made (vae_text.run.sweep).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from vae_text.core.errors import VaeTextError
from vae_text.core.utils import atomic_write, write_json
from vae_text.run.record import shelve_hydra
from vae_text.run.rundir import RunDirError, claim, holds_run, release

log = logging.getLogger("vae_text")

ERROR_FILE = "error.txt"
JOB_FILE = "job.json"
LAUNCH_ENV = "VAE_TEXT_SWEEP_LAUNCH"  # the launch's record folder, set for each job (hydra.job.env_set)
# keys that say where the data lies or how the job runs, not what it computes
IGNORED = ("device", "train.num_threads", "train.progress", "train.resume", "eval.progress",
           "data.dir", "data.cache_dir", "data.hub", "data.prepare", "data.prepare_sizes", "logger")


def file_digest(path: Path) -> dict:
    """A file's size and sha256 (read once per process: vae_text.data.text.file_sha256)."""
    from vae_text.data.text import file_sha256

    return {"size": path.stat().st_size, "sha256": file_sha256(path)}


def data_fingerprint(cfg: DictConfig) -> dict:
    """The data a job trains and is tested on: each split file's size and sha256 (source=files,
    fetched first where training would fetch it), or the `datasets` selection with the contents
    of its local `data_files` (source=hf: the config names the hub data)."""
    from vae_text.data.text import split_files
    from vae_text.run.parts import train_settings

    data = train_settings(cfg).data  # the config checked as training checks it
    if data.source == "files":
        return {split: {"file": path.name, **file_digest(path)} for split, path in split_files(data).items()}
    return {split: [file_digest(Path(f)) for f in ([files] if isinstance(files, str) else files)
                    if Path(f).is_file()]
            for split, files in (data.data_files or {}).items()}  # a split's value: a file or a list


def identity(cfg: DictConfig) -> dict:
    """What a job computes: its resolved config less `IGNORED`, and its data's fingerprint."""
    config = OmegaConf.to_container(cfg, resolve=True)
    for key in IGNORED:
        *parents, last = key.split(".")
        node = config
        for p in parents:
            node = node.get(p, {})
        node.pop(last, None)
    return {"config": config, "data": data_fingerprint(cfg)}


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two identities."""
    keys = []
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += differences(a, b, f"{prefix}{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}")
    return keys


def _mismatch(run_dir: Path, mine: dict, what: str) -> str | None:
    """None when the job in `run_dir` has this identity (or recorded none), else the refusal."""
    job = run_dir / JOB_FILE
    if not job.is_file():
        return None  # a job of an earlier version: named after the same overrides, as before
    keys = differences(json.loads(job.read_text()).get("identity", {}), mine)
    if not keys:
        return None
    named = list(dict.fromkeys(k.removeprefix("config.") if k.startswith("config.")
                               else f"the {k.split('.')[1]} split's contents" if "." in k else "the data"
                               for k in keys))
    shown = ", ".join(named[:4]) + (", ..." if len(named) > 4 else "")
    return (f"{run_dir} holds a {what} job of other settings ({shown} differ): it is left as it is "
            f"and its score not reused; launch into another hydra.sweep.dir, or remove that folder "
            f"to run the job again")


def run_job(cfg: DictConfig, train: Callable[[DictConfig], dict]) -> float:
    """One job of a sweep (see the module docstring); returns its monitored score, NaN when it
    failed or was refused (the other jobs run; Optuna counts the trial as failed)."""
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    run_dir = Path(hydra.runtime.output_dir)
    handlers = _detach_file_handlers(run_dir)  # Hydra opened train.log; nothing is written to it yet
    launch = _Launch(os.environ.get(LAUNCH_ENV), hydra.job.num, run_dir.name)
    try:
        mine, problem = identity(cfg), None
    except VaeTextError as err:  # a config or data error: training stops on it too
        mine, problem = None, str(err)
    outcome, owned = _admit(run_dir, mine, problem, cfg.train.monitor)
    if outcome is not None:
        _close(handlers)
        status, line, score = outcome
        (log.info if status == "skipped" else log.error)("%s %s: %s", status, run_dir.name, line)
        launch.record(status, line)
        if owned:
            release(run_dir)
        return score
    try:
        _reattach(handlers)
        return _run(cfg, train, run_dir, mine, launch)
    finally:
        release(run_dir)
        _close(handlers)


def _admit(run_dir: Path, mine: dict | None, problem: str | None,
           monitor: str) -> tuple[tuple[str, str, float] | None, bool]:
    """Whether this launch runs the job (no outcome yet) and whether it locked the folder; decided
    before anything is written into the folder."""
    outcome = _finished(run_dir, mine, problem, monitor)
    if outcome is not None:
        return outcome, False
    try:
        owned = claim(run_dir, str(run_dir) if holds_run(run_dir) else None)
    except VaeTextError as err:  # another launch is running it, or the folder cannot be written
        return ("refused" if isinstance(err, RunDirError) else "failed", str(err), math.nan), False
    outcome = _finished(run_dir, mine, problem, monitor)  # it may have finished meanwhile
    if outcome is None and mine is not None and holds_run(run_dir):
        line = _mismatch(run_dir, mine, "started")
        outcome = None if line is None else ("refused", line, math.nan)
    return outcome, owned


def _finished(run_dir: Path, mine: dict | None, problem: str | None,
              monitor: str) -> tuple[str, str, float] | None:
    results = run_dir / "results.json"
    if not results.is_file():
        return None
    if mine is None:
        return "failed", f"{problem} (the finished job in {run_dir} is left as it is)", math.nan
    line = _mismatch(run_dir, mine, "finished")
    if line is not None:
        return "refused", line, math.nan
    score = json.loads(results.read_text()).get(f"best_val_{monitor}", math.nan)
    return "skipped", f"finished already (best_val_{monitor}={score})", float(math.nan if score is None else score)


def _run(cfg: DictConfig, train: Callable[[DictConfig], dict], run_dir: Path, mine: dict | None,
         launch: _Launch) -> float:
    """The job is this launch's: record the piece, then train (or resume) it."""
    _write_hydra(run_dir, launch.hydra_subdir, cfg)
    if holds_run(run_dir) and cfg.train.resume is None:
        log.info("resuming %s from its checkpoints/last.pt", run_dir.name)
        with open_dict(cfg):
            cfg.train.resume = str(run_dir)
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    job = json.loads((run_dir / JOB_FILE).read_text()) if (run_dir / JOB_FILE).is_file() else {}
    piece = {"launch": launch.name, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "device": str(cfg.device), "num_threads": cfg.train.num_threads, "pid": os.getpid()}
    if mine is not None:  # else training stops on the config or data error and says so
        write_json(run_dir / JOB_FILE, {"identity": mine, "pieces": [*job.get("pieces", []), piece]})
    try:
        score = float(train(cfg)[f"best_val_{cfg.train.monitor}"])
    except Exception as err:  # noqa: BLE001 -- any failure is this job's, not the sweep's
        line = str(err) if isinstance(err, VaeTextError) else f"{type(err).__name__}: {err}"
        text = line if isinstance(err, VaeTextError) else traceback.format_exc()
        atomic_write(run_dir / ERROR_FILE, text if text.endswith("\n") else text + "\n")
        log.error("job %s failed: %s (written to %s)", run_dir.name, line.splitlines()[0],
                  run_dir / ERROR_FILE)
        launch.record("failed", line.splitlines()[0])
        return math.nan
    launch.record("finished", "")
    return score


def _write_hydra(run_dir: Path, subdir: str | None, cfg: DictConfig) -> None:
    """What Hydra writes into a job's `.hydra/` (the sweep callback holds it back until the job is
    accepted), as for a single run (vae_text.run.record): `.hydra/` is the latest piece's."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import _save_config

    if not subdir:
        return
    target = shelve_hydra(run_dir / subdir)  # an earlier piece's files go to `.hydra/earlier/<n>/`
    hydra = OmegaConf.create(OmegaConf.to_container(HydraConfig.instance().cfg))
    hydra.hydra.output_subdir = subdir
    task = OmegaConf.create(OmegaConf.to_container(HydraConfig.get().overrides.task))
    _save_config(cfg, "config.yaml", target)
    _save_config(hydra, "hydra.yaml", target)
    _save_config(task, "overrides.yaml", target)


class _Launch:
    """This launch's record of its jobs: `<launch folder>/<job num>.json` (vae_text.run.sweep)."""

    def __init__(self, folder: str | None, num: int, job: str) -> None:
        self.folder = Path(folder) if folder else None
        self.name = self.folder.name if self.folder else None
        self.num, self.job = num, job
        info = self.folder / "launch.json" if self.folder else None
        # where the job's .hydra/ goes once accepted; None: Hydra wrote it (no sweep callback)
        self.hydra_subdir = json.loads(info.read_text()).get("output_subdir") if info else None

    def record(self, status: str, line: str) -> None:
        if self.folder is not None:
            write_json(self.folder / f"{self.num}.json", {"job": self.job, "status": status, "line": line})


def _detach_file_handlers(run_dir: Path) -> list[logging.FileHandler]:
    root = logging.getLogger()
    found = [h for h in root.handlers if isinstance(h, logging.FileHandler)
             and Path(h.baseFilename).parent == run_dir.resolve()]
    for h in found:
        root.removeHandler(h)
    return found


def _reattach(handlers: list[logging.FileHandler]) -> None:
    for h in handlers:
        logging.getLogger().addHandler(h)


def _close(handlers: list[logging.FileHandler]) -> None:
    for h in handlers:
        logging.getLogger().removeHandler(h)
        h.close()
