"""Small helpers every entry point uses: atomic writes, the device, the CLI's error exit."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
from pathlib import Path

import torch

from vae_text.errors import ConfigError, OutputError


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename, so a
    crash leaves the old file or the new one, never a torn one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except OSError as err:
        raise write_error(path, err) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_error(path: Path | str, err: BaseException) -> OutputError:
    """One line for a failed write: the path and the cause (no space left, permission, ...)."""
    if isinstance(err, OSError) and err.errno is not None:
        cause = os.strerror(err.errno).lower()
        if err.errno == errno.ENOTDIR:
            cause = "a part of the path is a file, not a folder"
    else:  # torch.save's C++ writer hides the OS error ("iostream error", "unexpected pos"):
        # write 1 MiB beside the file to learn it (no space left, file size limit, ...)
        cause = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        probe = Path(path).with_name(f".write_probe{os.getpid()}")
        try:
            with probe.open("wb") as f:
                f.write(bytes(1 << 20))
                f.flush()
                os.fsync(f.fileno())
        except OSError as os_err:
            cause = os.strerror(os_err.errno).lower() if os_err.errno else cause
        finally:
            with contextlib.suppress(OSError):
                probe.unlink(missing_ok=True)
    return OutputError(f"{path}: cannot write it ({cause})")


def check_writable(folder: Path | str) -> None:
    """Make `folder` (and its parents) and create a file in it, before any work is done."""
    folder = Path(folder)
    probe = folder / f".write_probe{os.getpid()}"
    try:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory")
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
    except OSError as err:
        raise write_error(folder, err) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)


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
