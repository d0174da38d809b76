"""Finding what a command is pointed at: a run directory, a checkpoint file or an export folder,
and the data its saved config names, from wherever the command runs.

A checkpoint stores `data.dir` as it was given to training, often relative to the directory the
run was started from (`data/ptb`). `resolve_data` finds it again: as given (the current
directory), else beside the run (or export) folder or any folder above it, else the source
checkout, with a message naming what was tried.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vae_text.config import DataConfig
from vae_text.core.errors import DataError
from vae_text.data.text import fetch_from_hub


@dataclass
class Loaded:
    model: Any  # TextVAE, in eval mode
    tokenizer: Any
    config: dict  # the training config
    home: Path  # the run directory or export folder: evaluation files go here
    source: Path  # the checkpoint file or export folder read


def is_export(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and ((path / "config.json").is_file() or (path / "model.safetensors").is_file())


def resolve_data(data: DataConfig, home: str | Path | None, key: str = "data_dir") -> DataConfig:
    """`data` with a relative `dir` that is not found from here looked up beside `home` and its
    parents, then in the source checkout; unchanged for found folders and `datasets` sources, and
    for a folder the hub can fill (`data.hub`; an unreachable hub is one error at once, naming
    `key`, the command's way to point at the files)."""
    given = Path(data.dir)
    if data.source != "files" or given.is_dir():
        return data
    if given.is_absolute():
        return _fetchable(data, key)
    bases = [Path(home).resolve(), *Path(home).resolve().parents] if home is not None else []
    bases.append(Path(__file__).resolve().parents[1])  # a source checkout: data/ptb beside vae_text/
    for base in bases:
        if (base / given).is_dir():
            return dataclasses.replace(data, dir=str(base / given))
    if data.hub is not None:
        return _fetchable(data, key)
    raise DataError(f"data.dir={data.dir} (saved with the model) is not a folder here ({Path.cwd()}) "
                    f"nor beside {home} or a folder above it; pass the folder holding the "
                    f"{'/'.join(data.files.values())} files ({key}=<folder>)")


def _fetchable(data: DataConfig, key: str) -> DataConfig:
    """`data`, its missing folder fetched from the hub now, so that a failure names `key` (the
    command's own way to point at the files)."""
    if data.hub is not None:
        fetch_from_hub(data, Path(data.dir).resolve(), key)
    return data
