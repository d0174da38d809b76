"""Typed views of the Hydra config, checked at start-up before any data is read.

Each dataclass mirrors one config group. `section(cls, cfg.model, "model")` builds it, so a misspelt
key or an invalid value fails with a one-line `ConfigError` that names the key.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from vae_text.errors import ConfigError

T = TypeVar("T")


@dataclass
class ModelConfig:
    kind: str = "vae"  # "vae" (latent z) or "lm" (the same decoder, no latent)
    encoder: str = "lstm"  # vae_text.encoders.ENCODERS
    decoder: str = "lstm"  # vae_text.decoders.DECODERS
    posterior: str = "gaussian"  # q(z|x): vae_text.latent.POSTERIORS
    prior: str = "standard_normal"  # p(z): vae_text.latent.PRIORS
    encoder_args: dict[str, Any] = field(default_factory=dict)  # options of the chosen encoder
    decoder_args: dict[str, Any] = field(default_factory=dict)  # ... decoder
    posterior_args: dict[str, Any] = field(default_factory=dict)  # ... posterior family
    prior_args: dict[str, Any] = field(default_factory=dict)  # ... prior
    embed_size: int = 100
    encoder_hidden: int = 200
    encoder_layers: int = 1
    bidirectional: bool = False
    latent_size: int = 32
    decoder_hidden: int = 100
    decoder_layers: int = 1
    conditioning: str = "both"  # how z enters the decoder: "init", "concat" or "both"
    embed_dropout: float = 0.0  # dropout on decoder inputs (embeddings)
    output_dropout: float = 0.0  # dropout on decoder outputs, before the vocabulary projection
    word_dropout: float = 0.0  # fraction of decoder input words replaced by <unk> while training
    word_dropout_end: float | None = None  # anneal the rate linearly to this (null: constant)
    word_dropout_steps: int = 10_000  # ... over this many steps
    bn_gamma: float | None = None  # BN-VAE (Zhu et al. 2020): batch-norm mu with this fixed scale
    sample_z: bool = True  # False: z = mu (with kl_weight = 0 this is the deterministic autoencoder)
    init: str = "default"  # "default": PyTorch's; "uniform": U(-0.01, 0.01), embeddings U(-0.1, 0.1)

    def __post_init__(self) -> None:
        _choice("model.kind", self.kind, ("vae", "lm"))
        _choice("model.conditioning", self.conditioning, ("init", "concat", "both"))
        _choice("model.init", self.init, ("default", "uniform"))
        for key in ("embed_size", "encoder_hidden", "encoder_layers", "latent_size",
                    "decoder_hidden", "decoder_layers"):
            _positive_int(f"model.{key}", getattr(self, key))
        for key in ("embed_dropout", "output_dropout", "word_dropout"):
            _fraction(f"model.{key}", getattr(self, key))
        if self.word_dropout_end is not None:
            _fraction("model.word_dropout_end", self.word_dropout_end)
            _positive_int("model.word_dropout_steps", self.word_dropout_steps)
        _positive_or_null("model.bn_gamma", self.bn_gamma)
        if self.kind == "lm" and self.bn_gamma is not None:
            raise ConfigError("model.bn_gamma is set but model.kind=lm has no latent: unset it")
        self._check_parts()

    def _check_parts(self) -> None:
        """Each part names a registry entry, and its `_args` are options that entry declares."""
        from vae_text.decoders import DECODERS  # late imports: they import torch
        from vae_text.encoders import ENCODERS
        from vae_text.latent import POSTERIORS, PRIORS

        parts = [("decoder", DECODERS)]
        if self.kind == "vae":
            parts += [("encoder", ENCODERS), ("posterior", POSTERIORS), ("prior", PRIORS)]
        for part, registry in parts:
            name, args = getattr(self, part), getattr(self, f"{part}_args")
            if name not in registry:
                raise ConfigError(f"model.{part}={name!r} is unknown: choose one of {sorted(registry)}")
            if not isinstance(args, dict):
                raise ConfigError(f"model.{part}_args={args!r} is invalid: a mapping of options")
            known = _options(registry[name])
            for key in args:
                if key not in known:
                    raise ConfigError(f"model.{part}_args.{key} is not an option of "
                                      f"model.{part}={name}: it takes {sorted(known) or 'none'}")
        if self.kind == "vae" and self.bn_gamma is not None:
            if "bn_gamma" not in _options(POSTERIORS[self.posterior]):
                raise ConfigError(f"model.bn_gamma (BN-VAE) is not an option of "
                                  f"model.posterior={self.posterior}: unset it")
            if "bn_gamma" in self.posterior_args:
                raise ConfigError("model.bn_gamma and model.posterior_args.bn_gamma are both set: "
                                  "set model.bn_gamma only")


@dataclass
class ScheduleConfig:
    """A KL-weight schedule: `name` picks a function in `objective.SCHEDULES`, the rest are its
    keyword arguments (checked against its signature)."""

    name: str = "constant"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ObjectiveConfig:
    kl_weight: float = 1.0  # beta: the weight the schedule rises to (the sweep key)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    free_bits: float = 0.0  # nats the KL may use for free (0: off); the reported KL is the true KL
    free_bits_mode: str = "dim"  # "dim": batch mean per dimension; "sentence"; "element" (Li et al.)

    def __post_init__(self) -> None:
        if not isinstance(self.kl_weight, (int, float)) or self.kl_weight < 0:
            raise ConfigError(
                f"objective.kl_weight={self.kl_weight!r} is invalid: it must be a number >= 0"
            )
        if not isinstance(self.free_bits, (int, float)) or self.free_bits < 0:
            raise ConfigError(f"objective.free_bits={self.free_bits!r} is invalid: nats >= 0")
        _choice("objective.free_bits_mode", self.free_bits_mode, ("dim", "sentence", "element"))
        from vae_text.objective import SCHEDULES  # late import: objective imports nothing of ours

        if self.schedule.name not in SCHEDULES:
            raise ConfigError(
                f"objective.schedule.name={self.schedule.name!r} is unknown: "
                f"choose one of {sorted(SCHEDULES)} (e.g. objective/schedule=linear)"
            )
        fn = SCHEDULES[self.schedule.name]
        accepted = _parameters(fn)
        # An experiment may set another schedule's parameters (ptb sets warmup_steps) and a user
        # switch schedules on the command line: drop those, but a key no schedule knows is a typo.
        elsewhere = set().union(*(_parameters(f) for f in SCHEDULES.values()))
        unknown = set(self.schedule.params) - accepted - elsewhere
        if unknown:
            raise ConfigError(
                f"objective.schedule.{sorted(unknown)[0]} is not a parameter of the "
                f"{self.schedule.name!r} schedule: it takes {sorted(accepted)}"
            )
        self.schedule.params = {k: v for k, v in self.schedule.params.items() if k in accepted}
        try:
            fn(0, **self.schedule.params)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"objective.schedule ({self.schedule.name}): {err}") from None


@dataclass
class OptimConfig:
    name: str = "adam"  # a key of vae_text.optim.OPTIMIZERS: adam | sgd
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)  # adam
    momentum: float = 0.0  # sgd
    weight_decay: float = 0.0
    clip_norm: float | None = 5.0  # max gradient norm; null disables clipping
    plateau_factor: float | None = None  # multiply lr by this when the val score stops improving
    plateau_patience: int = 1  # the lr decays after more than this many epochs without improvement
    plateau_start_epoch: int = 0  # ... but never before this many epochs are complete
    plateau_reload_best: bool = False  # at each decay, go back to the best weights (best.pt)
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        from vae_text.optim import OPTIMIZERS  # late import: optim imports this module

        _choice("optim.name", self.name, tuple(OPTIMIZERS))
        if not self.lr > 0:
            raise ConfigError(f"optim.lr={self.lr!r} is invalid: it must be > 0")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"optim.momentum={self.momentum!r} is invalid: in [0, 1)")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas={list(self.betas)!r} is invalid: two numbers in [0, 1)")
        _positive_or_null("optim.clip_norm", self.clip_norm)
        if self.plateau_factor is not None and not 0 < self.plateau_factor < 1:
            raise ConfigError(
                f"optim.plateau_factor={self.plateau_factor!r} is invalid: in (0, 1), or null"
            )
        for key in ("plateau_patience", "plateau_start_epoch"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 0:
                raise ConfigError(f"optim.{key}={getattr(self, key)!r} is invalid: an integer >= 0")


@dataclass
class TrainConfig:
    batch_size: int = 32
    epochs: int = 10
    max_steps: int | None = None  # stop after this many optimizer steps (whichever comes first)
    early_stopping: int | None = None  # stop after this many epochs without a better val score
    max_minutes: float | None = None  # wall-time budget of the run, over all its resumed pieces
    monitor: str = "neg_elbo"  # validation score for best.pt, lr decay, early stopping (or "rec")
    log_every: int = 100  # steps between train/ metric lines
    checkpoint_every: int | None = None  # also save last.pt every N steps (for preemption)
    progress: bool = True  # tqdm progress bar
    resume: str | None = None  # run directory or checkpoint file to continue from
    num_threads: int | None = None  # torch CPU threads; null keeps PyTorch's default
    precision: str = "fp32"  # "bf16": the training forward pass under bfloat16 autocast
    max_lr_decays: int | None = None  # stop once the plateau rule has decayed the lr this often

    def __post_init__(self) -> None:
        for key in ("batch_size", "epochs", "log_every"):
            _positive_int(f"train.{key}", getattr(self, key))
        _choice("train.monitor", self.monitor, ("neg_elbo", "rec"))
        _choice("train.precision", self.precision, ("fp32", "bf16"))
        for key in ("max_steps", "early_stopping", "checkpoint_every", "num_threads", "max_lr_decays"):
            if getattr(self, key) is not None:
                _positive_int(f"train.{key}", getattr(self, key))
        _positive_or_null("train.max_minutes", self.max_minutes)


@dataclass
class RemedyConfig:
    """Training procedures against posterior collapse (vae_text.remedies)."""

    aggressive: bool = False  # He et al. 2019: encoder-only inner updates before each decoder step
    aggressive_max_inner: int = 100  # cap of the inner loop
    aggressive_check_every: int = 10  # inner steps between two checks of the encoder's loss
    pretrain_epochs: int = 0  # Li et al. 2019: autoencoder epochs (beta = 0, z = mu) first
    pretrain_converge: bool = False  # the AE phase as a run of its own: best val rec, lr plateau
    # rule, ending at train.max_lr_decays decays (or pretrain_epochs); the VAE starts from its best

    def __post_init__(self) -> None:
        _positive_int("remedy.aggressive_max_inner", self.aggressive_max_inner)
        _positive_int("remedy.aggressive_check_every", self.aggressive_check_every)
        if not isinstance(self.pretrain_epochs, int) or self.pretrain_epochs < 0:
            raise ConfigError(f"remedy.pretrain_epochs={self.pretrain_epochs!r} is invalid: an integer >= 0")


def section(cls: type[T], node: DictConfig | dict | None, prefix: str) -> T:
    """Build dataclass `cls` from a config node; unknown keys and bad types are `ConfigError`s."""
    data = {} if node is None else node
    if isinstance(data, DictConfig):
        data = OmegaConf.to_container(data, resolve=True)
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"{prefix}.{unknown[0]} is not a known key: valid keys are {sorted(names)}"
        )
    if cls is ObjectiveConfig and isinstance(data.get("schedule"), dict):
        sched = dict(data["schedule"])
        data = {**data, "schedule": ScheduleConfig(name=sched.pop("name", "constant"), params=sched)}
    if "betas" in data:
        data = {**data, "betas": tuple(data["betas"])}
    return cls(**data)


def _options(cls: type) -> set[str]:
    """A registry entry's options: the keyword-only arguments of its __init__."""
    return {p.name for p in inspect.signature(cls.__init__).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _parameters(fn) -> set[str]:
    return set(inspect.signature(fn).parameters) - {"step"}


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
