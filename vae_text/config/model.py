"""The model and objective configs."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from vae_text.config.checks import _choice, _fraction, _positive_int, _positive_or_null
from vae_text.core.errors import ConfigError
from vae_text.core.options import Option, declared

# --- model and objective -----------------------------------------------------------------------


@dataclass
class ModelConfig:
    """The founding design: embedding 100 -> LSTM 200 encoder -> Gaussian (mu, logvar), z 32
    -> LSTM 100 decoder conditioned on z -> softmax over the vocabulary."""

    kind: str = "vae"  # "vae" (latent z) or "lm" (the same decoder, no latent)
    encoder: str = "lstm"  # vae_text.model.encoders.ENCODERS
    decoder: str = "lstm"  # vae_text.model.decoders.DECODERS
    posterior: str = "gaussian"  # q(z|x): vae_text.model.latent.POSTERIORS
    prior: str = "standard_normal"  # p(z): vae_text.model.latent.PRIORS
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


class ScheduleConfig(dict):
    """`objective.schedule`, flat as users type it (`objective.schedule.warmup_steps=100`): `name`
    picks a function in `objectives.SCHEDULES` and every other key is one of its keyword arguments.
    A new schedule is a new function: no schema changes. `vae_text.run.parts.check_names` checks the
    name and fills in the function's defaults (config/ imports no registry)."""

    @property
    def name(self) -> str:
        return self.get("name")

    @property
    def params(self) -> dict[str, Any]:
        """The keyword arguments of the schedule (every one, once checked)."""
        return {k: v for k, v in self.items() if k != "name"}

    def __eq__(self, other: object) -> bool:  # the same function with the same arguments
        return isinstance(other, ScheduleConfig) and (self.name, self.params) == (other.name, other.params)

    __hash__ = None  # type: ignore[assignment]


@dataclass
class ObjectiveConfig:
    """What training minimises: the objective `name` with its options `args`. The KL weight beta(step)
    = kl_weight * schedule(step) and free bits are the ELBO's (and any objective's that weighs a
    KL); validation and test always report the beta = 1 ELBO."""

    kl_weight: float = 1.0  # beta: the weight the schedule rises to (the sweep key)
    # A dict, not a dataclass, so that any schedule's parameters pass composition (ScheduleConfig).
    # Its keys' defaults are the schedule function's: the option objective/schedule=linear (made
    # from its signature, vae_text.run.parts.register) spells them out in the composed config.
    schedule: dict[str, Any] = field(default_factory=lambda: {"name": "linear"})
    free_bits: float = 0.0  # nats the KL may use for free (0: off); the reported KL is the true KL
    free_bits_mode: str = "dim"  # "dim": batch mean per dimension; "sentence"; "element" (Li et al.)
    name: str = "elbo"  # the objective: a key of vae_text.objectives.OBJECTIVES (objective=<name>)
    args: dict[str, Any] = field(default_factory=dict)  # its options: its __init__'s keywords after cfg

    def __post_init__(self) -> None:
        if not isinstance(self.kl_weight, (int, float)) or self.kl_weight < 0:
            raise ConfigError(
                f"objective.kl_weight={self.kl_weight!r} is invalid: it must be a number >= 0"
            )
        if not isinstance(self.free_bits, (int, float)) or self.free_bits < 0:
            raise ConfigError(f"objective.free_bits={self.free_bits!r} is invalid: nats >= 0")
        _choice("objective.free_bits_mode", self.free_bits_mode, ("dim", "sentence", "element"))
        self.schedule = ScheduleConfig(self.schedule)  # names checked by vae_text.run.parts


def objective_options(cls: type) -> dict[str, Option]:
    """An objective's options: the keyword arguments of its `__init__` after `cfg`."""
    return declared(cls, skip=2)  # self, cfg


def schedule_defaults(fn) -> dict[str, Any]:
    """The keyword arguments of a schedule function and their defaults: its config keys."""
    return {p.name: MISSING if p.default is p.empty else p.default
            for p in inspect.signature(fn).parameters.values() if p.name != "step"}
