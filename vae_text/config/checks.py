"""Building the config dataclasses from a composed config, and their one-line checks."""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from vae_text.core.errors import ConfigError

T = TypeVar("T")


# --- building them from a composed config ------------------------------------------------------


def section(cls: type[T], node: DictConfig | dict | None, prefix: str) -> T:
    """Build dataclass `cls` (and the dataclasses nested in it) from a config node, running their
    checks; an unknown key (added with `+key=`) or a bad value is a one-line `ConfigError`."""
    data = {} if node is None else node
    if isinstance(data, DictConfig):
        data = OmegaConf.to_container(data, resolve=True)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}.{unknown[0]} is not a known key" if prefix else \
            f"{unknown[0]} is not a known top-level key"
        raise ConfigError(f"{where}: valid keys are {sorted(names)}")
    _finite_numbers(data, prefix)
    hints = typing.get_type_hints(cls)
    data = dict(data)
    for key, value in data.items():
        inner = _dataclass_of(hints[key])
        if inner is not None and isinstance(value, dict):
            data[key] = section(inner, value, f"{prefix}.{key}" if prefix else key)
        elif isinstance(value, list) and typing.get_origin(hints[key]) is tuple:
            data[key] = tuple(value)
    return cls(**data)


def _finite_numbers(value: Any, key: str) -> None:
    """No config value is NaN or infinite (OmegaConf takes both as floats; every limit a key sets
    has null, not infinity, for "none")."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}={value!r} is invalid: it must be a finite number")
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, (list, tuple)) else ()
    for k, v in items:
        _finite_numbers(v, f"{key}.{k}" if key else str(k))


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass of a field typed `X` or `X | None`, else None."""
    for t in (hint, *typing.get_args(hint)):
        if isinstance(t, type) and dataclasses.is_dataclass(t):
            return t
    return None




# --- checks ------------------------------------------------------------------------------------


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is invalid: choose one of {list(allowed)}")


def _positive_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key}={value!r} is invalid: it must be a positive integer")


def _positive_or_null(key: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not value > 0):
        raise ConfigError(f"{key}={value!r} is invalid: it must be a number > 0, or null")


def _fraction(key: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{key}={value!r} is invalid: it must be in [0, 1)")


def _module_names(key: str, value: Any) -> None:
    """A list of dotted Python module names (`plugins=[my_lab.parts]`)."""
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, str) and v and all(p.isidentifier() for p in v.split(".")) for v in value):
        raise ConfigError(f"{key}={value!r} is invalid: a list of module names ({key}=[my_lab.parts])")


def _device(value: Any) -> None:
    if value != "auto" and not str(value).startswith(("cpu", "cuda", "mps")):
        raise ConfigError(f"device={value!r} is invalid: auto, cpu, cuda, cuda:N or mps")


# --- the run's parts against their registries (late imports: they import torch) ----------------
