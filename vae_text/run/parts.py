"""Every name a config gives a part, checked against the registry that holds it.

The config dataclasses (vae_text.config, the lowest layer) check values; which names exist is known
only here, above the registries, once the user's plugins (vae_text.core.plugins) have added their own
parts. `train_settings(cfg)` is the one way from a composed training config to its settings: the
plugins imported, the values checked, then the names. Every place that starts a run calls it
before it writes anything (the run-directory guard, `train()`, a sweep's jobs), so a misspelt
prior fails as one line before Hydra makes an output folder.

A registry is one line of `NAMED`: the key that names an entry, the registry, and (optionally) the
key of the entry's options, which are the keyword-only arguments of its `__init__`. Each option
given is checked against its declaration there (its annotation: type, choices, range;
vae_text.core.options), so a part of the user's own is checked like a built-in one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vae_text.config import (
    EvalConfig,
    ModelConfig,
    ScheduleConfig,
    TrainRunConfig,
    objective_options,
    schedule_defaults,
    section,
)
from vae_text.config import register as register_schemas
from vae_text.config.checks import _module_names
from vae_text.core import plugins
from vae_text.core.errors import CheckpointError, ConfigError
from vae_text.core.options import Option, check_values, declared
from vae_text.data.presets import RECIPES
from vae_text.metrics import METRICS
from vae_text.model.decoders import DECODERS
from vae_text.model.encoders import ENCODERS, Encoder
from vae_text.model.latent import POSTERIORS, PRIORS, kl_per_dimension
from vae_text.objectives import OBJECTIVES, SCHEDULES
from vae_text.remedies import REMEDIES, build_remedies, check_needs, keys, options
from vae_text.run.optim import OPTIMIZERS


def keyword_only(cls: Any) -> dict[str, Option]:
    """A model part's options: the keyword-only arguments of its __init__."""
    return declared(cls, keyword_only=True)


def _has_latent(section_: Any) -> bool:
    return section_.kind == "vae"


@dataclass(frozen=True)
class Named:
    """A config key whose value names an entry of `registry` (a list of names: each one)."""

    key: str  # dotted, from the top of the training config: "model.prior"
    registry: Mapping[str, Any]
    args: str | None = None  # the key of its options, in the same section: "model.prior_args"
    options: Callable[[Any], dict[str, Option]] = keyword_only  # the options an entry declares
    when: Callable[[Any], bool] | None = None  # given the key's section: whether it applies
    hint: str = ""  # appended to the unknown-name message: " (objective=<name>)"


# One line a registry (a list value, e.g. `eval.metrics`, has each of its names checked).
NAMED = (
    Named("model.decoder", DECODERS, "model.decoder_args"),
    Named("model.encoder", ENCODERS, "model.encoder_args", when=_has_latent),
    Named("model.posterior", POSTERIORS, "model.posterior_args", when=_has_latent),
    Named("model.prior", PRIORS, "model.prior_args", when=_has_latent),
    Named("objective.name", OBJECTIVES, "objective.args", options=objective_options,
          hint=" (objective=<name>)"),
    Named("optim.name", OPTIMIZERS),
    Named("eval.metrics", METRICS, hint=" (or register your own: vae_text.metrics.register)"),
    Named("data.prepare", RECIPES, when=lambda data: data.prepare is not None),
)


# --- the check ---------------------------------------------------------------------------------


def check_names(settings: TrainRunConfig) -> TrainRunConfig:
    """Check every name of a training config against its registry, and fill the KL schedule's
    defaults in (from its function); returns `settings`. Import the plugins first."""
    for named in NAMED:
        _check(named, settings)
    check_model(settings.model)
    settings.objective.schedule = checked_schedule(settings.objective.schedule)
    o, m = settings.objective, settings.model
    check_remedies(settings.remedy)
    check_needs(build_remedies(settings.remedy), m.kind)  # what each remedy asked for needs
    if m.kind == "lm" and OBJECTIVES[o.name].needs_latent:
        raise ConfigError(f"objective={o.name} needs a latent but model.kind=lm has none: "
                          f"use objective=elbo, or model=vae")
    if m.kind == "vae" and o.free_bits > 0 and o.free_bits_mode in ("dim", "element"):
        if kl_per_dimension(POSTERIORS[m.posterior], PRIORS[m.prior]) is False:
            raise ConfigError(f"objective.free_bits_mode={o.free_bits_mode} needs a KL per latent "
                              f"dimension, which model.posterior={m.posterior} with model.prior="
                              f"{m.prior} has not (one total): use objective.free_bits_mode=sentence")
    return settings


def check_remedies(remedy: Mapping[str, Any]) -> None:
    """Every `remedy` key is a registered remedy's switch or option, and the options given are
    valid (checked against each remedy's declaration, then by the remedy itself, also while it
    is off: a sweep may turn it on). A switch that is not an option is true or false."""
    owner = {key: cls for cls in REMEDIES.values() for key in keys(cls)}
    for key in remedy:
        if key not in owner:
            raise ConfigError(f"remedy.{key} is not an option of any remedy: they take "
                              f"{sorted(owner)} (or register your own: vae_text.remedies.register)")
    for cls in REMEDIES.values():
        own = options(cls)
        check_values({cls.switch: Option(cls.switch, bool), **own}, remedy, "remedy")
        given = {k: remedy[k] for k in own if k in remedy}
        if given:
            cls(**given)


def check_model(model: ModelConfig) -> ModelConfig:
    """The names of a model config (also one read from a checkpoint), and what its parts must
    agree on; returns `model`."""
    check_section(model, "model.")
    if model.kind == "vae":  # both live on one space (R^Z, the sphere), or the prior is the posterior's
        q_on = getattr(POSTERIORS[model.posterior], "support", "real")
        p_on = getattr(PRIORS[model.prior], "support", "real")
        if p_on not in (q_on, "posterior"):
            raise ConfigError(f"model.prior={model.prior} lives on {p_on} but model.posterior="
                              f"{model.posterior} on {q_on}: choose a prior of the same space")
    if model.kind == "vae" and getattr(PRIORS[model.prior], "feeds_encoder", False) \
            and ENCODERS[model.encoder].encode_embedded is Encoder.encode_embedded:
        raise ConfigError(f"model.prior={model.prior} feeds pseudo-inputs to the encoder, which "
                          f"model.encoder={model.encoder} cannot read (it has no encode_embedded): "
                          f"choose another prior or encoder")
    if model.kind == "vae" and model.bn_gamma is not None:
        if "bn_gamma" not in keyword_only(POSTERIORS[model.posterior]):
            raise ConfigError(f"model.bn_gamma (BN-VAE) is not an option of "
                              f"model.posterior={model.posterior}: unset it")
        if "bn_gamma" in model.posterior_args:
            raise ConfigError("model.bn_gamma and model.posterior_args.bn_gamma are both set: "
                              "set model.bn_gamma only")
    return model


def check_eval(cfg: EvalConfig) -> EvalConfig:
    """The names of an evaluation config (`eval.*` of a training run; the evaluate command's own
    top-level keys), after the plugins it names; returns `cfg`."""
    plugins.load(getattr(cfg, "plugins", ()))
    return check_section(cfg, "eval.", shown=cfg.where)


def check_section(root: Any, prefix: str, shown: str | None = None) -> Any:
    """The `NAMED` keys under `prefix` ("model.", "eval.") in `root`, that section of a training
    config; messages name the keys with `shown` in place of the prefix (the evaluate command's
    keys are top-level). Returns `root`."""
    for named in NAMED:
        if named.key.startswith(prefix):
            _check(named, root, prefix, prefix if shown is None else shown)
    return root


def _check(named: Named, root: Any, prefix: str = "", shown: str = "") -> None:
    """`named` against the config `root`, whose keys start after `prefix`."""
    where, _, field = named.key[len(prefix):].rpartition(".")
    section_ = functools.reduce(getattr, where.split("."), root) if where else root
    if named.when is not None and not named.when(section_):
        return
    key = shown + named.key[len(prefix):]
    args_key = shown + named.args[len(prefix):] if named.args else ""
    value = getattr(section_, field)
    for name in value if isinstance(value, (list, tuple)) else [value]:
        if name not in named.registry:
            raise ConfigError(f"{key}={name!r} is unknown: choose one of "
                              f"{sorted(named.registry)}{named.hint}")
        if named.args is None:
            continue
        args = getattr(section_, named.args.rpartition(".")[2])
        if not isinstance(args, dict):
            raise ConfigError(f"{args_key}={args!r} is invalid: a mapping of options")
        known = named.options(named.registry[name])
        for option in args:
            if option not in known:
                raise ConfigError(f"{args_key}.{option} is not an option of "
                                  f"{key}={name}: it takes {sorted(known) or 'none'}")
        check_values(known, args, args_key)


def checked_schedule(schedule: dict) -> ScheduleConfig:
    """`objective.schedule` checked against `objective.SCHEDULES`, with every parameter of its
    function (those not given: the function's defaults). Another schedule's parameters are
    dropped: an experiment may set them (ptb sets warmup_steps) and a user switch schedules on
    the command line; a key no schedule knows is a typo."""
    params = dict(schedule)
    name = params.pop("name", None)
    if name not in SCHEDULES:
        raise ConfigError(f"objective.schedule.name={name!r} is unknown: "
                          f"choose one of {sorted(SCHEDULES)} (e.g. objective/schedule=linear)")
    fn = SCHEDULES[name]
    accepted = schedule_defaults(fn)
    elsewhere = set().union(*(schedule_defaults(f) for f in SCHEDULES.values()))
    unknown = set(params) - set(accepted) - elsewhere
    if unknown:
        raise ConfigError(f"objective.schedule.{sorted(unknown)[0]} is not a parameter of the "
                          f"{name!r} schedule: it takes {sorted(accepted)}")
    out = ScheduleConfig(name=name, **{**accepted, **{k: v for k, v in params.items() if k in accepted}})
    for key, value in out.params.items():  # every schedule parameter is a number
        if (isinstance(value, bool) or not isinstance(value, (int, float))) \
                and not (value is None and accepted[key] is None):
            raise ConfigError(f"objective.schedule.{key}={value!r} is invalid: it must be a number")
    try:
        fn(0, **out.params)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"objective.schedule ({name}): {err}") from None
    return out


# --- from a composed config to settings --------------------------------------------------------


def train_settings(cfg: DictConfig | dict) -> TrainRunConfig:
    """A composed training config as checked settings: its plugins imported, its values checked
    (vae_text.config), then its names (`check_names`)."""
    plugins.load(_plugins_of(cfg))
    return check_names(TrainRunConfig.from_cfg(cfg))


def saved_model(config: Mapping[str, Any], where: str | Path) -> ModelConfig:
    """The model config of a saved run (a checkpoint's or a saved folder's `config`, read from
    `where`), its plugins imported first so that a model with the user's own prior loads. A plugin
    missing here is this environment's (ConfigError, its own line); an invalid model config is the file's
    (CheckpointError naming `where`)."""
    named = _plugins_of(config)
    trained_with = f" (the run was trained with plugins={named})" if named else ""
    try:
        plugins.load(named)
    except ConfigError as err:
        raise ConfigError(f"{err}{trained_with}") from None
    try:
        return check_model(section(ModelConfig, config["model"], "model"))
    except ConfigError as err:
        raise CheckpointError(f"{where}: its saved config is invalid: {err}{trained_with}") from None


def _plugins_of(cfg: DictConfig | Mapping[str, Any]) -> list[str]:
    value = cfg.get("plugins")
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if value is None:  # a run from before plugins existed
        return []
    _module_names("plugins", value)
    return list(value)


# --- Hydra -------------------------------------------------------------------------------------


def register() -> None:
    """Everything composing `conf/` needs in Hydra's ConfigStore (idempotent): the schemas
    (vae_text.config.register) and every KL schedule as the option `objective/schedule=<name>`,
    its keys and defaults read from the function's signature (the installed plugins' schedules
    too: their entry points are imported first; `plugins=` is read only after composing)."""
    from hydra.core.config_store import ConfigStore

    plugins.load()
    register_schemas()
    store = ConfigStore.instance()
    for name, fn in SCHEDULES.items():
        store.store(group="objective/schedule", name=name, node={"name": name, **schedule_defaults(fn)})

