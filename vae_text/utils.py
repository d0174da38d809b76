"""Small helpers every entry point uses: atomic writes, the device, the CLI's error exit."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from vae_text.errors import ConfigError


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename, so a
    crash leaves the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _finite(x):
    """JSON has no NaN or infinity: such floats become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(_finite(data), indent=2) + "\n")


def pick_device(name: str) -> torch.device:
    """`device=auto` is CUDA when present, else the CPU; an explicit CUDA device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available here: use device=auto or cpu")
    return device


def default_threads() -> int:
    """Torch CPU threads when none are configured: the physical cores this process may run on
    (its CPU affinity, e.g. a SLURM or taskset allocation, over the hyperthreads per core)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        siblings = Path("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list").read_text()
        per_core = sum(len(range(int(a), int(b or a) + 1)) for a, _, b in
                       (part.partition("-") for part in siblings.strip().split(",")))
    except (OSError, ValueError):
        per_core = 1
    return max(1, cpus // max(1, per_core))
