"""The Hydra options that come from optional extras of the package (pyproject.toml), and the one
line that names the extra when its plugin is not installed.

A plain `pip install vae_text` leaves out the launchers and the Optuna sweeper; without them Hydra
says only "Could not find 'hydra/launcher/joblib'". The command line is read before Hydra composes
it, so the user learns which `pip install "vae_text[...]"` provides the option; an option set
inside a config file gets the same line from Hydra's own error (vae_text.config.entry.compose_error).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Extra:
    module: str  # what Hydra's plugin scan imports
    distribution: str  # what pip installs
    extra: str  # the extra of vae_text that pulls it in


JOBLIB = Extra("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher", "launchers")
SUBMITIT = Extra("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher", "launchers")
OPTUNA = Extra("hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper", "search")

# (group, option) -> its plugin; option None: every option of the group needs it
NEEDS: dict[tuple[str, str | None], Extra] = {
    ("hydra/launcher", "joblib"): JOBLIB,
    ("hydra/launcher", "slurm"): SUBMITIT,  # conf/hydra/launcher/slurm.yaml extends submitit_slurm
    ("hydra/launcher", "slurm_ddp"): SUBMITIT,
    ("hydra/launcher", "submitit_slurm"): SUBMITIT,
    ("hydra/launcher", "submitit_local"): SUBMITIT,
    ("hydra/sweeper", "optuna"): OPTUNA,
    ("hparams_search", None): OPTUNA,  # conf/hparams_search/*.yaml override /hydra/sweeper: optuna
}


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # its parent package is missing, or an import hook refuses it
        return False


def missing_extra(argv: list[str]) -> str | None:
    """The message for the first override in `argv` whose option needs a plugin that is not
    installed (None: every option asked for is available)."""
    for arg in argv:
        key, eq, value = arg.lstrip("+~").partition("=")
        if eq and (message := _missing(key, value)):
            return message
    return None


def missing_extra_in(hydra_error: str) -> str | None:
    """The same message for an option set inside a config file (`override /hydra/launcher:
    joblib`), which only Hydra's composition finds: from its "Could not find '<group>/<option>'"
    (None: the missing option is not one of an extra's)."""
    for path in re.findall(r"Could not (?:find|load) '([\w/.-]+)'", hydra_error):
        key, _, value = path.rpartition("/")
        if message := _missing(key, value):
            return message
    return None


def _missing(key: str, value: str) -> str | None:
    need = NEEDS.get((key, value)) or NEEDS.get((key, None))
    if need is None or installed(need.module):
        return None
    return (f"{key}={value} needs the Hydra plugin {need.distribution}, which is not installed: "
            f"pip install \"vae_text[{need.extra}]\"")
