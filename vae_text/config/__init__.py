"""Every config of vae_text as a dataclass: the one home of every default.

Hydra composes `conf/` on top of these classes (`register()` stores them in its ConfigStore as the
schemas `base_train`, `base_evaluate` and `base_sample`), so the YAML files hold only what differs
from the defaults below, and a misspelt key (`model.latnet_size=3`) or a wrong type (`optim.lr=abc`)
fails while Hydra composes, with the key named (`vae_text.run.command.hydra_entry` prints it as one
line). Fields typed `dict[str, Any]` (a schedule's parameters, a family's options) stay open: any
key composes and the dataclass that owns the field checks it. OmegaConf does not run `__post_init__`, so the range
checks run after composing: `section(cls, cfg.model, "model")` (or `TrainRunConfig.from_cfg`)
builds the dataclasses, and a bad value is a one-line `ConfigError` naming the key.

This package is the layer below every registry. A name that picks
a registry entry (`model.prior`, `optim.name`, ...) is checked where the registries are known, by
`vae_text.run.parts.check_names`, after the user's plugins have registered their own parts.

May import: vae_text.core (the errors, files and paths) only: it is the layer below every
registry.
"""

from vae_text.config.checks import section
from vae_text.config.data import MAX_LEN, SPLITS, STRATEGIES, DataConfig, HubConfig, TokenizerConfig
from vae_text.config.entry import compose_error, is_compose_error, register
from vae_text.config.model import (
    ModelConfig,
    ObjectiveConfig,
    ScheduleConfig,
    objective_options,
    schedule_defaults,
)
from vae_text.config.run import (
    DecodeConfig,
    EvalConfig,
    EvaluateConfig,
    GenerationConfig,
    LoggerConfig,
    OptimConfig,
    RemedyConfig,
    SampleConfig,
    TrainConfig,
    TrainRunConfig,
)

__all__ = ["MAX_LEN", "SPLITS", "STRATEGIES", "DataConfig", "DecodeConfig", "EvalConfig",
           "EvaluateConfig", "GenerationConfig", "HubConfig", "LoggerConfig", "ModelConfig", "ObjectiveConfig",
           "OptimConfig", "RemedyConfig", "SampleConfig", "ScheduleConfig", "TokenizerConfig",
           "TrainConfig", "TrainRunConfig", "compose_error", "is_compose_error", "register",
           "objective_options", "schedule_defaults", "section"]

