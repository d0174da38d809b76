"""Hydra glue: the schemas in its ConfigStore, and one-line errors for a config that does not compose.
The entry points' wrapper, which also stores the parts' options, is vae_text.run.command.hydra_entry."""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vae_text.config.checks import _dataclass_of
from vae_text.config.extras import missing_extra_in
from vae_text.config.run import EvaluateConfig, SampleConfig, TrainRunConfig

# --- Hydra -------------------------------------------------------------------------------------


def register() -> None:
    """Store the schemas `base_train`, `base_evaluate` and `base_sample` (the first entry of the
    defaults list of train.yaml, evaluate.yaml and sample.yaml) in Hydra's ConfigStore
    (idempotent). The options made from registries (`objective/schedule=<name>`) are stored by
    `vae_text.run.parts.register`, which calls this: use that one before composing `conf/`."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, cls in (("base_train", TrainRunConfig), ("base_evaluate", EvaluateConfig),
                      ("base_sample", SampleConfig)):
        store.store(name=name, node=_open_dicts(OmegaConf.structured(cls), cls))


def _open_dicts(node: DictConfig, cls: type) -> DictConfig:
    """Unset the struct flag of every `dict[str, Any]` field (a schedule's parameters, a family's
    options): any key composes, even without `+`, and the dataclass that owns it checks it."""
    for name, hint in typing.get_type_hints(cls).items():
        if name not in node or OmegaConf.is_missing(node, name) or node[name] is None:
            continue
        inner = _dataclass_of(hint)
        if inner is not None:
            _open_dicts(node[name], inner)
        elif typing.get_origin(hint) is dict and typing.get_args(hint)[1:] == (Any,):
            OmegaConf.set_struct(node[name], False)
    return node


def _null_node_key(err: BaseException) -> str | None:
    """The key of OmegaConf's plain AttributeError for an override that fills a null structured
    node (`data=text data.hub={id:x}`): OmegaConf cannot merge into None and names the node only in
    its message's `full_key:` line."""
    if type(err) is not AttributeError:
        return None
    match = re.search(r"^\s*full_key: (\S+)$", str(err), re.MULTILINE)
    return match.group(1) if match else None


def is_compose_error(err: BaseException) -> bool:
    """Whether `err` says a config did not compose (what compose_error turns into one line), not a
    bug of the code that ran on it."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(err, (HydraException, OmegaConfBaseException)) or _null_node_key(err) is not None


def compose_error(err: BaseException) -> str:
    """One line for a config Hydra could not compose: the key, and what is wrong with it."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    if key := _null_node_key(err):
        return (f"{key} is null here and cannot be filled from the command line (OmegaConf merges no "
                f"keys into a null section): set the whole {key} section in a YAML file of its config "
                f"group, or start from a config option that sets it")
    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else err
    key = getattr(cause, "full_key", None)
    if isinstance(cause, OmegaConfBaseException) and key:
        schema = cause.object_type
        if (isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and isinstance(schema, type)
                and dataclasses.is_dataclass(schema)):
            valid = sorted(f.name for f in dataclasses.fields(schema))
            return f"{key} is not a known key: valid keys are {valid}"
        if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):  # an open dict: schedule, ...
            return f"{key} is not in the config: add a new key with +{key}=..."
        return f"{key} is invalid: {str(cause.msg).splitlines()[0]}"
    if extra := missing_extra_in(str(err)):  # an extra's option set in a config file
        return extra
    head, items = [], []  # e.g. "Could not find 'experiment/x'", "Available options ...", its items
    for line in str(err).splitlines():
        if line.startswith("Config search path"):
            break
        if line.strip():
            (items if line[0].isspace() else head).append(line.strip())
    return "; ".join(head) + (f" {', '.join(items)}" if items else "")
