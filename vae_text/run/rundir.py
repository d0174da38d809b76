"""The run directory's guard: one run at a time in a folder, and nothing of a finished run changed.

A training run holds an exclusive OS lock (`flock`) on `<run dir>/.lock` from before Hydra writes
anything into the folder until the process ends; the kernel drops the lock when the process dies,
however it dies, so a killed run never leaves a stale lock behind. A second run on the same folder
stops with one line naming the pid that holds it.

Under `python -m vae_text.train`, `RunDirGuard` (a Hydra callback, conf/train.yaml) runs in
`on_run_start`, before Hydra makes the folder and writes `.hydra/` and `train.log` into it:
- the config is checked first: a rejected config makes no folder at all;
- the folder is checked next: one that holds a run (`checkpoints/last.pt`) and is not being
  resumed (`train.resume=<that folder>`) is refused before any of its files is rewritten;
- the lock is taken, and temporary files a killed write left behind (`.<name>.tmp<pid>`) are removed,
  with the staging folder of a killed resume (vae_text.run.record);
- for a resume of the run in the folder, Hydra's `.hydra/` and log are pointed into the staging
  folder: they join the run's record only once the resume is accepted (vae_text.run.record).
`train(cfg, run_dir)` called from Python goes through `claim()` itself. The lock file is emptied
when the lock is dropped, so a command that did not run leaves it as it found it.
"""

from __future__ import annotations

import copy
import fcntl
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from vae_text.core.errors import ConfigError, VaeTextError
from vae_text.core.utils import check_writable
from vae_text.run import record

LOCK = ".lock"
_held: dict[Path, tuple[int, Path | None]] = {}  # run dir -> (lock fd, the topmost folder we made)


class RunDirError(ConfigError):
    """A run directory that cannot be used: locked by another run, holding a finished run, unwritable."""


def holds_run(run_dir: Path) -> bool:
    return (run_dir / "checkpoints" / "last.pt").exists()


def resumes_here(run_dir: Path, resume: str | None) -> bool:
    """`train.resume` names the run held in `run_dir` (the folder or one of its checkpoints)."""
    if resume is None or not holds_run(run_dir):
        return False
    r = Path(resume)
    return (r if r.is_dir() else r.parent.parent).resolve() == run_dir.resolve()


def check_reuse(run_dir: Path, resume: str | None) -> None:
    """A folder that holds a run is used only to continue that run (`train.resume=<folder>`)."""
    if holds_run(run_dir) and not resumes_here(run_dir, resume):
        raise RunDirError(f"{run_dir} already holds a run (checkpoints/last.pt): choose another "
                          f"hydra.run.dir, or continue it with train.resume={run_dir}")


def claim(run_dir: Path | str, resume: str | None = None) -> bool:
    """Lock `run_dir` for this process (made if missing), after checking it may be used; remove
    the temporary files of killed writes. Returns False when this process held it already."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        return False
    check_reuse(run_dir, resume)
    made = next((p for p in reversed([run_dir, *run_dir.parents]) if not p.exists()), None)
    check_writable(run_dir)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise RunDirError(f"{run_dir} is in use by another run (pid {holder}): wait for it to "
                          f"end, or choose another hydra.run.dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[run_dir] = (fd, made)
    check_reuse(run_dir, resume)  # another run may have finished in it while we waited
    for folder in (run_dir, run_dir / "checkpoints"):
        for stale in folder.glob(".*.tmp*"):  # the lock is ours: no write of another run is live
            stale.unlink(missing_ok=True)
    record.discard(run_dir)  # a killed resume's
    return True


def release(run_dir: Path | str, discard: bool = False) -> None:
    """Drop the lock; with `discard`, remove the folder if this run made it and it holds nothing
    of value (a run that stopped on a start-up error). A resume that has not been accepted
    leaves nothing behind (its staging folder goes)."""
    run_dir = Path(run_dir).resolve()
    fd, made = _held.pop(run_dir, (None, None))
    if fd is not None:
        record.discard(run_dir)
    if discard and made is not None and run_dir.is_dir() and \
            {p.name for p in run_dir.iterdir()} <= {LOCK, ".hydra", "train.log", "config.yaml"}:
        shutil.rmtree(run_dir, ignore_errors=True)
        for parent in run_dir.parents:  # outputs/<date>/ when this run made it
            if not parent.is_relative_to(made) or any(parent.iterdir()):
                break
            parent.rmdir()
    if fd is not None:
        os.ftruncate(fd, 0)  # the pid is for the run that holds the lock
        os.close(fd)


def _rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency
    Callback = object  # type: ignore[assignment,misc]


class RunDirGuard(Callback):
    """Hydra callback of `vae_text.train`: check the config and claim `hydra.run.dir` before
    Hydra makes the folder or writes `.hydra/` into it (single runs; a sweep's jobs are guarded
    by `train()` itself)."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        # Hydra 1.3 turns a callback's exception into a warning and runs the job anyway: a refusal
        # has to end the process here, as the entry points do (one line, exit status 2).
        try:
            self._guard(config)
        except VaeTextError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    def _guard(self, config: Any) -> None:
        from omegaconf import OmegaConf, open_dict, read_write

        from vae_text.run.parts import train_settings

        task = copy.deepcopy(config)
        with read_write(task), open_dict(task):
            del task["hydra"]
        settings = train_settings(task)  # a rejected config (a misspelt prior too) makes no folder
        run_dir = str(OmegaConf.select(config, "hydra.run.dir"))
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.run.dir = run_dir  # resolved once: ${now:...} must not tick over
        path = Path(run_dir)
        if _rank() == 0:
            claim(path, settings.train.resume)
        else:  # other ranks check without locking (rank 0 holds the lock)
            check_reuse(path, settings.train.resume)
        if resumes_here(path, settings.train.resume):
            record.stage_hydra(config, path, main=_rank() == 0)
