"""A small model in about half a minute (one quiet CPU core), for the notebook and the README's
examples when no trained checkpoint is at hand: the `smoke` experiment on the first 1,000
sentences of each PTB split (docs/notebook.md: its figures, and why its reconstructions are all
alike).

    from vae_text.quick import quick_model
    run_dir = quick_model()            # outputs/quick (reused once it holds a finished run)

It says what it trains and where, then prints the run's log lines: a line every 10 steps, the
time left (measured on the first steps), each validation and the test evaluation.
VAE_TEXT_QUICK_DIR moves its default folder (tests train it under a temporary folder).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("vae_text")

QUICK = ["+experiment=smoke", "data.max_sentences=1000", "train.epochs=2", "eval.iw_samples=5",
         "train.progress=false"]


def quick_dir() -> Path:
    """Where quick_model() trains when given no folder: $VAE_TEXT_QUICK_DIR, else
    <project>/outputs/quick."""
    return Path(os.environ.get("VAE_TEXT_QUICK_DIR") or project_root() / "outputs" / "quick")


def project_root() -> Path:
    """The folder a run's relative paths are meant from: the source checkout (parent of
    vae_text/) when there is one, else the current directory."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() else Path.cwd()


def compose_train(overrides: list[str]):
    """conf/train.yaml composed with `overrides`, as `python -m vae_text.train` would."""
    from hydra import compose, initialize_config_dir

    from vae_text.run.parts import register

    register()
    from vae_text.core.utils import conf_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir())):
        return compose("train", overrides=overrides)


def quick_model(run_dir: str | Path | None = None, overrides: list[str] = ()) -> Path:
    """Train the quick model into `run_dir` (default: quick_dir()) unless it holds a finished run
    already; returns the run directory. Data paths are made absolute, so the checkpoint works
    from any directory."""
    from vae_text.train import train

    root = project_root()
    run_dir = Path(run_dir) if run_dir is not None else quick_dir()
    if (run_dir / "results.json").is_file():
        return run_dir
    given = {o.partition("=")[0] for o in overrides}
    paths = [o for o in (f"data.dir={root / 'data' / 'ptb'}", f"data.cache_dir={root / 'data' / 'cache'}")
             if o.partition("=")[0] not in given]
    cfg = compose_train([*QUICK, *paths, *overrides])
    with shown(log):
        log.info("training a quick model into %s: the smoke experiment's small LSTM VAE, %s epochs "
                 "on the first %s sentences of %s in batches of %s, then validated and tested; the "
                 "time it takes follows after %s steps, the next call reuses the model",
                 run_dir, cfg.train.epochs, cfg.data.max_sentences, cfg.data.dir,
                 cfg.train.batch_size, cfg.train.log_every)
        train(cfg, run_dir)
    record_command(run_dir, [*QUICK, *overrides])
    return run_dir


def record_command(run_dir: Path, overrides: list[str]) -> None:
    """The overrides that train the same model with `python -m vae_text.train` from the project
    root, where Hydra keeps a command-line run's (.hydra/overrides.yaml): the model card names the
    command (vae_text.run.card). The absolute data paths quick_model adds are left out."""
    import yaml

    from vae_text.core.utils import atomic_write

    atomic_write(run_dir / ".hydra" / "overrides.yaml", yaml.safe_dump(list(overrides)))


@contextlib.contextmanager
def shown(logger: logging.Logger) -> Iterator[None]:
    """The INFO lines of `logger` printed to stdout for the duration, unless logging is set up to
    show them already (a script that configured it, Hydra): a notebook shows nothing otherwise."""
    if logger.isEnabledFor(logging.INFO) and (logger.handlers or logging.getLogger().handlers):
        yield
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def notebook_checkpoint(path: str | Path | None) -> Path:
    """What the notebook loads: `path` (from here, else from the project root, so a notebook
    started in notebooks/ finds outputs/...), or, given none, the quick model."""
    if not path:
        return quick_model()
    for candidate in (Path(path), project_root() / path):
        if candidate.exists():
            return candidate
    from vae_text.core.errors import CheckpointError

    raise CheckpointError(f"{path}: not found from {Path.cwd()} nor from {project_root()}; give a "
                          f"run directory, a checkpoint file or an export folder")
