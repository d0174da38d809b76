"""What every registry of named parts shares: the class decorator that files a class under its
config name (the class attribute `name`, also from the user's own code), and the reading of a
part's options off its `__init__` signature."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", bound=type)


def registrar(registry: dict[str, type], kind: str) -> Callable[[T], T]:
    """`@register` for `registry`: `registry[cls.name] = cls`, refusing a class without a name."""

    def register(cls: T) -> T:
        if not getattr(cls, "name", ""):
            raise ValueError(f"{cls.__qualname__} has no name: set the class attribute `name` "
                             f"(its config name among the {kind})")
        registry[cls.name] = cls
        return cls

    register.__doc__ = (f"Class decorator: files a class in {kind.upper()} under its `name` (also "
                        f"for {kind} of the user's own code).")
    return register


def init_options(cls: type, skip: int = 1, keyword_only: bool = False) -> list[str]:
    """A part's options: the keyword arguments of its `__init__` after the first `skip`
    parameters (self, and what the code passes positionally), or only its keyword-only ones."""
    params = list(inspect.signature(cls.__init__).parameters.values())[skip:]
    kinds = (inspect.Parameter.KEYWORD_ONLY,) if keyword_only else (
        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds]
