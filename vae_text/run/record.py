"""A run's record across its pieces: what a resume may change in a run directory, and when.

A run directory is the record of one run: `.hydra/` (the command of its latest piece), `config.yaml`,
`metrics.jsonl`, `checkpoints/`, `eval_test.json`, `results.json`, `train.log`. A command that
resumes it (`train.resume=<run dir>`) changes it only once the resume is accepted, so a refused,
failing or diverging command leaves every byte as it was:

- Hydra writes a resume's `.hydra/` and log into the staging folder `<run dir>/.resume/`
  (`stage_hydra`, called by RunDirGuard before Hydra writes anything). When the resume is
  accepted they join the record (`accept`): the files `.hydra/` held move to
  `.hydra/earlier/<n>/` (n = 1 for the launch, 2 for the first resume, ...) and the resume's take
  their place, so `.hydra/` is always the latest piece's and every earlier one stays readable;
  the log is appended to `train.log` and goes on there.
- A run that was interrupted is accepted once its checkpoint, config and data have been checked
  (the trainer is built): it then continues in place, so a killed resume resumes again.
- A finished run (it holds `results.json`) is accepted only when the resumed piece finishes: the
  piece runs in the staging folder (`stage_finished`: the best checkpoint and `metrics.jsonl` are
  carried over) and its files replace the run's at the end (`commit`). A piece that fails or
  diverges is discarded with the staging folder.

The staging folder of a killed command is removed by the next command that locks the folder.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from vae_text.core.utils import next_number

STAGING = ".resume"
EARLIER = Path(".hydra") / "earlier"


def staging(run_dir: Path) -> Path:
    return run_dir / STAGING


def stage_hydra(config: Any, run_dir: Path, main: bool = True) -> None:
    """Point Hydra's `.hydra/` output and job log file of this launch into the staging folder
    (Hydra writes them after its callbacks' `on_run_start`, before the task runs). A process
    other than rank 0 of a distributed run (`main=False`) writes neither: rank 0 keeps the record."""
    from omegaconf import OmegaConf, open_dict, read_write

    if main:
        staging(run_dir).mkdir(parents=True, exist_ok=True)  # Hydra opens the log before it writes .hydra/
    with read_write(config.hydra), open_dict(config.hydra):
        if config.hydra.output_subdir is not None:
            config.hydra.output_subdir = f"{STAGING}/{config.hydra.output_subdir}" if main else None
        handlers = OmegaConf.to_container(config.hydra.job_logging, resolve=False).get("handlers") or {}
        for name, handler in handlers.items():
            filename = handler.get("filename") if isinstance(handler, dict) else None
            if isinstance(filename, str):  # `${hydra.runtime.output_dir}/${hydra.job.name}.log`
                config.hydra.job_logging.handlers[name].filename = \
                    str(staging(run_dir.resolve()) / filename.rpartition("/")[2]) if main else os.devnull


def accept(run_dir: Path) -> None:
    """The resume is accepted: the files of `.hydra/` move to `.hydra/earlier/<n>/` and the
    staged ones take their place; its staged log is appended to the run's log, which the log
    handlers write to from now on."""
    stage = staging(run_dir)
    for handler in _file_handlers(stage):
        _redirect(handler, run_dir / Path(handler.baseFilename).name)
    if not stage.is_dir():
        return
    staged = next((p for p in stage.iterdir() if p.is_dir() and (p / "overrides.yaml").is_file()), None)
    if staged is not None:
        hydra = shelve_hydra(run_dir / ".hydra")
        for path in staged.iterdir():
            os.replace(path, hydra / path.name)
        staged.rmdir()
    for log_file in stage.glob("*.log"):
        _append(log_file, run_dir / log_file.name)


def shelve_hydra(hydra: Path) -> Path:
    """Make room in a `.hydra/` folder for a new piece's files: the ones it holds move to
    `earlier/<n>/` (n = 1, 2, ... in launch order). Returns the folder, made if absent."""
    before = [p for p in hydra.iterdir() if p.is_file()] if hydra.is_dir() else []
    if before:
        earlier = hydra / EARLIER.name
        earlier.mkdir(parents=True, exist_ok=True)
        piece = earlier / str(next_number((p.name for p in earlier.iterdir()), first=1))
        piece.mkdir()
        for path in before:
            os.replace(path, piece / path.name)
    hydra.mkdir(parents=True, exist_ok=True)
    return hydra


def stage_finished(run_dir: Path) -> Path:
    """The folder a finished run's resumed piece runs in: the run's best checkpoint (the test
    uses it if the piece does no better) and `metrics.jsonl` (the resumed lines follow its
    kept ones) carried over; the run's own files are not touched."""
    stage = staging(run_dir)
    (stage / "checkpoints").mkdir(parents=True, exist_ok=True)
    best = run_dir / "checkpoints" / "best.pt"
    if best.is_file():
        try:
            os.link(best, stage / "checkpoints" / "best.pt")  # checkpoints are replaced, never edited
        except OSError:
            shutil.copy2(best, stage / "checkpoints" / "best.pt")
    if (run_dir / "metrics.jsonl").is_file():
        shutil.copy2(run_dir / "metrics.jsonl", stage / "metrics.jsonl")
    return stage


def commit(run_dir: Path) -> None:
    """A finished run's resumed piece has finished: its `.hydra/` and log join the record
    (`accept`) and its files replace the run's, `results.json` last."""
    accept(run_dir)
    stage = staging(run_dir)
    files = sorted((p for p in stage.rglob("*") if p.is_file()), key=lambda p: p.name == "results.json")
    for path in files:
        target = run_dir / path.relative_to(stage)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    discard(run_dir)


def discard(run_dir: Path) -> None:
    """Remove the staging folder: a resume that was refused, failed, diverged or was killed."""
    shutil.rmtree(staging(run_dir), ignore_errors=True)


def _file_handlers(folder: Path) -> list[logging.FileHandler]:
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in logging.root.manager.loggerDict)]
    found = {id(h): h for lg in loggers for h in getattr(lg, "handlers", ())
             if isinstance(h, logging.FileHandler) and Path(h.baseFilename).parent == folder.resolve()}
    return list(found.values())


def _redirect(handler: logging.FileHandler, target: Path) -> None:
    """Append what `handler` wrote so far to `target` and have it write there from now on."""
    with handler.lock:
        handler.flush()
        staged = Path(handler.baseFilename)
        if handler.stream is not None:
            handler.stream.close()
            handler.stream = None
        _append(staged, target)
        handler.baseFilename, handler.mode = str(target.resolve()), "a"
        handler.stream = handler._open()


def _append(staged: Path, target: Path) -> None:
    if staged.is_file():
        with staged.open("rb") as src, target.open("ab") as dst:
            shutil.copyfileobj(src, dst)
        staged.unlink()
