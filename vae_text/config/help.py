"""`--help` of the entry points: what the command does, its own keys with their defaults and the
comments of the config dataclasses (vae_text.config, the one source of defaults), and for train
the experiments with their one-line descriptions. Hydra's own help stays at --hydra-help."""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from pathlib import Path
from typing import Any

_FIELD = re.compile(r"^\s+(\w+):[^=#]*=[^#]*#\s*(.*)$")


def comments(cls: type) -> dict[str, str]:
    """Each field's trailing comment in the source of `cls` and of the dataclasses it extends."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        for line in lines:
            match = _FIELD.match(line)
            if match:
                out[match.group(1)] = match.group(2)
    return out


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def options(cls: type, prefix: str = "") -> list[str]:
    """`key=default  # comment` for every field of `cls` (sections of nested dataclasses indented)."""
    notes, lines = comments(cls), []
    for field in dataclasses.fields(cls):
        value = _default(field)
        if dataclasses.is_dataclass(value):
            lines.append(f"  {prefix}{field.name}:")
            lines += [f"  {line}" for line in options(type(value), f"{prefix}{field.name}.")]
            continue
        shown = "???" if value == "???" else repr(value) if isinstance(value, str) else value
        note = notes.get(field.name, "")
        lines.append(f"  {prefix}{field.name}={shown}" + (f"  # {note}" if note else ""))
    return lines


def experiments(conf: Path) -> list[str]:
    """`name: description` of each conf/experiment/*.yaml (its first comment after the package line)."""
    out = []
    for path in sorted((conf / "experiment").glob("*.yaml")):
        words = []
        for line in path.read_text().splitlines():
            if "@package" in line:
                continue
            if not line.startswith("#") or line[1:].strip().startswith("python"):
                break
            words.append(line[1:].strip())
        text = " ".join(words)
        end = re.search(r"(?<! al)\.\s+(?=[A-Z])", text)  # the first sentence ("et al." is none)
        line = text[:end.start() + 1] if end else text
        out.append(f"  +experiment={path.stem}: {line if len(line) <= 150 else line[:149] + '…'}")
    return out


def entry_help(module: str) -> str:
    from vae_text.config.run import EvaluateConfig, SampleConfig, TrainRunConfig

    name = module.rpartition(".")[2]
    schema = {"train": TrainRunConfig, "evaluate": EvaluateConfig, "sample": SampleConfig}[name]
    loaded = sys.modules.get(module) or sys.modules.get("__main__")
    doc = (getattr(loaded, "__doc__", None) or "").strip()
    parts = [f"python -m vae_text.{name} [key=value ...]", "", doc, "", "Options (key=default):"]
    parts += options(schema)
    if name == "train":
        from vae_text.core.utils import conf_dir

        parts += ["", "Groups: data=, tokenizer=, model=, objective=, optim=, logger=, "
                  "hparams_search= (python -m vae_text.train --hydra-help lists their options)",
                  "", "Experiments:", *experiments(conf_dir())]
    parts += ["", "Every resolved key: --cfg job.  Hydra's own options: --hydra-help."]
    return "\n".join(parts)


def wants_help(argv: list[str]) -> bool:
    return "--help" in argv or "-h" in argv


def module_of(fn: Any) -> str:
    """The entry point's module name, also when run as `python -m vae_text.<name>`."""
    module = fn.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else module
    return module
