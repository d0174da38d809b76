"""What every entry point needs and no model concept owns: atomic files, the device, CLI errors,
and where the Hydra configs are.

Written files are atomic (a temp file in the same folder, then `os.replace`): a crash or a full disk
leaves the old file or the new one, never a torn one, so a reader (a report over a sweep that is
still running, a resumed run) never sees half a JSON file or half a checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib.util
import json
import math
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from vae_text.core.errors import ConfigError, OutputError, VaeTextError

if TYPE_CHECKING:
    import torch

F = TypeVar("F", bound=Callable[..., Any])


def _config_path() -> str:
    """The configs as Hydra's `config_path`: the package `vae_text.conf` (a wheel ships `conf/`
    under that name, and an editable install maps it to the checkout's `conf/`), or the
    checkout's top-level `conf/` when the code runs from source with nothing installed."""
    if importlib.util.find_spec("vae_text.conf") is not None:
        return "pkg://vae_text.conf"
    return str(Path(__file__).resolve().parents[1] / "conf")


CONFIG_PATH = _config_path()  # what every @hydra.main entry point is given


def conf_dir() -> Path:
    """The configs as a folder on disk: the installed package `vae_text.conf`, or the checkout's
    top-level `conf/`."""
    spec = importlib.util.find_spec("vae_text.conf")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[1] / "conf"


def atomic_write(path: str | Path, data: str | bytes | Callable[[IO[bytes]], None]) -> Path:
    """Write text (UTF-8), bytes, or whatever `data(file)` writes to a binary file, atomically.

    The parent folders are made. On any error the temp file is removed and `path` keeps its old
    content (or stays absent); a failed write is an `OutputError` naming the path and the cause.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            if isinstance(data, str):
                f.write(data.encode("utf-8"))
            elif isinstance(data, (bytes, bytearray, memoryview)):
                f.write(data)
            else:
                data(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # RuntimeError: torch.save's "iostream error" on a full disk
        raise write_error(path, err) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # terminal colour codes


def short_reason(text: str, limit: int = 120) -> str:
    """An error message quoted in ours: on one line, without terminal colour codes, at most `limit`
    characters, cut between words."""
    text = " ".join(ANSI.sub("", text).split())
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(" ,;:.") + " ..."


def error_line(err: BaseException, limit: int = 120) -> str:
    """An exception's first line as `short_reason` quotes it; its type's name when it says nothing."""
    return short_reason((str(err).strip().splitlines() or [type(err).__name__])[0], limit)


def write_error(path: Path | str, err: BaseException) -> OutputError:
    """One line for a failed write: the path and the cause (no space left, permission, ...)."""
    if isinstance(err, OSError) and err.errno is not None:
        cause = os.strerror(err.errno).lower()
        if err.errno == errno.ENOTDIR:
            cause = "a part of the path is a file, not a folder"
    else:  # torch.save's C++ writer hides the OS error ("iostream error", "unexpected pos"):
        # write 1 MiB beside the file to learn it (no space left, file size limit, ...)
        cause = error_line(err)
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


def next_number(names: Iterable[str], first: int) -> int:
    """The number for the next kept piece: one past the highest of `names` that is a number
    (`first` when none is), so a kept piece is never replaced even after one was removed."""
    return max((int(name) + 1 for name in names if name.isdigit()), default=first)


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


def _finite(x: Any) -> Any:
    """JSON has no NaN or infinity: such floats become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def write_json(path: str | Path, data: Any) -> Path:
    """`data` as indented JSON with a final newline (NaN and infinities as null), atomically."""
    return atomic_write(path, json.dumps(_finite(data), indent=2) + "\n")


def pick_device(name: str | torch.device) -> torch.device:
    """`auto` (CUDA when present, else CPU) or an explicit device; CUDA asked for but absent is a
    ConfigError, not a crash deep inside the first forward pass."""
    import torch  # here, so that the report (no torch needed) imports this module cheaply

    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={str(name)!r} but CUDA is not available here: use device=auto or cpu")
    return device


def check_precision(precision: str, device: torch.device) -> None:
    """bf16 autocast on a CPU whose oneDNN has no bfloat16 kernels (no AVX-512 BF16 / AMX) fails
    deep inside the first LSTM step: say so at start-up instead, in one line."""
    import torch

    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    if precision == "bf16" and device.type == "cpu" and not supported():
        raise ConfigError("train.precision=bf16: this CPU has no bfloat16 kernels (oneDNN reports "
                          "none), so its LSTMs cannot run under bf16 autocast: use train.precision=fp32")


def cli(func: F | None = None, *, also: tuple[type[Exception], ...] = ()) -> F:
    """Decorate an entry point's main: a `VaeTextError` (or one of `also`) prints
    `error: <message>` on stderr and exits with status 2, with no traceback.

        @hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
        @cli
        def main(cfg): ...
    """
    if func is None:
        return functools.partial(cli, also=also)  # type: ignore[return-value]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (VaeTextError, *also) as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


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
