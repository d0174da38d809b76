"""A part's options, declared by its `__init__` and checked against the values a config gives.

An option is a keyword argument of the part's `__init__` (which ones, each registry says: the
model's parts take their keyword-only ones, an objective those after `cfg`). Its annotation is
its declaration, and the config check reads it, so a part of the user's own gets the same checks
as a built-in one without a line of checking code:

    int, float, bool, str    an integer; a finite number (an integer too); true or false; a string
    Literal["a", "b"]        one of the choices
    Annotated[T, Range(..)]  T within the bounds: Range(ge=1), Range(gt=0, le=1e4), ...
    T | None                 T, or null (say in the part's docstring what null means)

`PositiveInt` and `NonNegative` are the common `Annotated[int, Range(ge=1)]` and
`Annotated[float, Range(ge=0)]`.
An option without an annotation, or with another one, is passed on unchecked. A check that
involves two options or the model's sizes (attention heads that divide the width) stays in the
part's `__init__`, as a one-line ConfigError.
"""

from __future__ import annotations

import inspect
import math
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from vae_text.core.errors import ConfigError

_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


@dataclass(frozen=True)
class Range:
    """Bounds of a number option, in `Annotated[int, Range(ge=1)]`: >= ge, > gt, <= le, < lt."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def holds(self, value: float) -> bool:
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def __str__(self) -> str:
        low = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else None
        high = f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else None
        if low and high:
            return f"in {low}, {high}"
        if low:
            return (">= " if low[0] == "[" else "> ") + low[1:]
        if high:
            return ("<= " if high[-1] == "]" else "< ") + high[:-1]
        return ""


PositiveInt = Annotated[int, Range(ge=1)]
NonNegative = Annotated[float, Range(ge=0)]


@dataclass(frozen=True)
class Option:
    """One declared option: its type (`kind`: int, float, bool, str; None: unchecked), its
    `choices` (a Literal), its `range`, and whether null is allowed."""

    name: str
    kind: type | None
    choices: tuple = ()
    range: Range | None = None
    nullable: bool = False

    @property
    def allowed(self) -> str:
        """What a value may be, in words: "an integer >= 1, or null"."""
        if self.choices:
            text = f"one of {list(self.choices)}"
        else:
            text = "a finite number" if self.kind is float and self.range is None else \
                _KINDS.get(self.kind, "any value")
            if self.range is not None and str(self.range):
                text += f" {self.range}"
        return text + (", or null" if self.nullable else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable or self.kind is None
        if self.kind is None:
            return True
        if self.choices:
            return any(type(value) is type(c) and value == c for c in self.choices)
        if isinstance(value, bool) != (self.kind is bool):
            return False
        number = (int, float) if self.kind is float else self.kind
        if not isinstance(value, number):
            return False
        if self.kind is float and not math.isfinite(value):
            return False
        return self.range is None or self.range.holds(value)

    def check(self, value: Any, key: str) -> None:
        """A one-line ConfigError naming `key` (the option's full key) unless `value` is allowed."""
        if not self.accepts(value):
            raise ConfigError(f"{key}={value!r} is invalid: {self.allowed}")


def declared(cls: type, skip: int = 1, keyword_only: bool = False) -> dict[str, Option]:
    """A part's options, in order: the keyword arguments of its `__init__` after the first `skip`
    parameters (self, and what the code passes positionally), or only its keyword-only ones."""
    init = cls.__init__
    kinds = (inspect.Parameter.KEYWORD_ONLY,) if keyword_only else (
        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = list(inspect.signature(init).parameters.values())[skip:]
    return {p.name: _option(p.name, _resolved(p.annotation, init)) for p in params if p.kind in kinds}


def check_values(options: Mapping[str, Option], values: Mapping[str, Any], key: str) -> None:
    """Each of `values` that is one of `options` against its declaration; `key` is the section's
    (`model.decoder_args`): a message names `model.decoder_args.ffn_size`."""
    for name, value in values.items():
        if name in options:
            options[name].check(value, f"{key}.{name}")


def _resolved(annotation: Any, fn: Any) -> Any:
    """An annotation as an object: a string one (`from __future__ import annotations`) evaluated
    in the module of `fn`; None where it has none or the name is not there at run time."""
    if annotation is inspect.Parameter.empty:
        return None
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, getattr(fn, "__globals__", {}))  # noqa: S307 (the part's own source)
    except Exception:  # a name imported for type checkers only: the option is unchecked
        return None


def _option(name: str, annotation: Any) -> Option:
    """The declaration an annotation makes (kind None: one the checker does not read)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            inner = _option(name, rest[0])
            return Option(name, inner.kind, inner.choices, inner.range, nullable=True)
    if origin is Annotated:
        inner = _option(name, args[0])
        bounds = next((m for m in annotation.__metadata__ if isinstance(m, Range)), inner.range)
        return Option(name, inner.kind, inner.choices, bounds, inner.nullable)
    if origin is Literal:
        kinds = {type(a) for a in args}
        return Option(name, kinds.pop() if len(kinds) == 1 else object, tuple(args))
    if annotation in _KINDS:
        return Option(name, annotation)
    return Option(name, None)
