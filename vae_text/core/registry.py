"""What every registry of named parts shares: the class decorator that files a class under its
config name (the class attribute `name`, also from the user's own code). A part's options are
read off its `__init__` by vae_text.core.options."""

from __future__ import annotations

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

