"""A small model in a minute or two, for the notebook and the README's examples when no trained
checkpoint is at hand: the `smoke` experiment on the first 1,000 sentences of each PTB split.

    from vae_text.quick import quick_model
    run_dir = quick_model()            # outputs/quick (reused once it holds a finished run)
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("vae_text")

QUICK = ["+experiment=smoke", "data.max_sentences=1000", "train.epochs=2", "eval.iw_samples=5",
         "train.progress=false"]


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
    """Train the quick model into `run_dir` (default: <project>/outputs/quick) unless it holds
    a finished run already; returns the run directory. Data paths are made absolute, so the
    checkpoint works from any directory."""
    from vae_text.train import train

    root = project_root()
    run_dir = Path(run_dir) if run_dir is not None else root / "outputs" / "quick"
    if (run_dir / "results.json").is_file():
        return run_dir
    given = {o.partition("=")[0] for o in overrides}
    paths = [o for o in (f"data.dir={root / 'data' / 'ptb'}", f"data.cache_dir={root / 'data' / 'cache'}")
             if o.partition("=")[0] not in given]
    cfg = compose_train([*QUICK, *paths, *overrides])
    log.info("training a quick model into %s (a minute or two on a CPU)", run_dir)
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
