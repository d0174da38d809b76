"""The remedy protocol: training procedures against posterior collapse that change the loop, not
the loss (free bits, annealing and word dropout live in vae_text.objectives and vae_text.model.textvae;
docs/remedies.md says what each is).

A remedy is a `Remedy` registered in `REMEDIES` (`@register`). It owns its state (`state_keys`,
saved in checkpoints under its name), declares what it `needs`, and acts through named hooks the
loop calls at fixed points, each a no-op by default. It sees the loop only through `Loop`: the
model, the loop's position, its phase, and the few actions below; never the trainer.

Its options are the keyword arguments of its `__init__`, read from the `remedy` config section
under the same names; `switch` names the key whose (truthy) value turns it on
(`remedy.aggressive=true`, `remedy.pretrain_epochs=2`, or `+remedy=<name>`, conf/remedy/).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from torch import Tensor, nn

from vae_text.core.errors import ConfigError
from vae_text.core.options import Option, declared
from vae_text.core.registry import registrar

if TYPE_CHECKING:  # annotations only
    from vae_text.data.batches import Batch
    from vae_text.model.textvae import TextVAE

# What a remedy may need, and why it would be refused without it.
NEEDS = {
    "latent": "a latent z (model.kind=vae)",
    "encoder": "updates of the encoder alone (model.kind=vae)",
    "phase": "a training phase of its own before the model's (one remedy at a time)",
}


@dataclass(frozen=True)
class Phase:
    """A stretch of training a remedy runs before the model's own (an autoencoder phase): the loop
    caps the epochs at its length, selects the best weights by its monitor (None: no selection),
    logs `val/<name>` = 1, and does not stop on the lr decays (the phase ends instead)."""

    name: str
    epochs: int
    monitor: str | None


class Loop(Protocol):
    """What a remedy sees of the training loop."""

    model: TextVAE
    seed: int  # the run's seed
    step: int  # optimizer steps of the model so far
    epoch: int  # completed epochs
    phase_epochs: int  # completed epochs since the current phase began
    phase: Phase | None  # a remedy's phase in progress (None: the model's own training)

    def loss_of(self, batch: Batch, noise_seed: int) -> tuple[Tensor, float]:
        """The objective's loss on `batch` at this step's beta (to differentiate) and the whole
        batch's value (the same on every process)."""

    def inner_batch(self, i: int) -> tuple[Batch, int]:
        """The i-th random batch of the epoch for an inner loop, and its noise seed (resumable)."""

    def optimize(self, loss: Tensor, part: str | None = None) -> None:
        """One optimisation step of the model's optimizer on `loss`; with `part` ("encoder" or
        "decoder") only that part's parameters (and their optimizer state) change."""

    def save(self, name: str) -> None:
        """A checkpoint `checkpoints/<name>` of the run as it is."""

    def load_best(self) -> None:
        """The weights of the best validation score so far (checkpoints/best.pt)."""

    def new_phase(self) -> None:
        """A fresh optimizer and model selection; the KL schedule restarts."""

    def out_of_lr_decays(self) -> bool:
        """train.max_lr_decays reached."""


class Remedy:
    """The hooks, in the order the loop calls them."""

    name: ClassVar[str] = ""  # its key in REMEDIES
    switch: ClassVar[str] = ""  # the `remedy` key that turns it on
    needs: ClassVar[tuple[str, ...]] = ()  # keys of NEEDS
    state_keys: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Remedy | None:
        """The remedy `cfg` (the `remedy` section, a mapping) asks for, with its options, or None."""
        if not cfg.get(cls.switch):
            return None
        return cls(**{k: cfg[k] for k in options(cls) if k in cfg})

    def start(self, loop: Loop) -> None:
        """After the model, optimizer and loop position are built (or restored)."""

    def phase(self) -> Phase | None:
        """The phase this remedy runs now (None: none)."""
        return None

    def beta(self, loop: Loop, beta: float) -> float:
        """The KL weight of this step, given the objective's (or the previous remedy's)."""
        return beta

    def before_step(self, loop: Loop) -> dict[str, float]:
        """Before a training step's forward pass; returns statistics to log (numbers)."""
        return {}

    def after_backward(self, loop: Loop) -> None:
        """Between backward and the optimizer step (gradients may be edited)."""

    def after_validation(self, loop: Loop, metrics: dict, epoch_end: bool) -> None:
        """After a validation pass; `metrics` may be extended before they are logged."""

    def end_epoch(self, loop: Loop) -> None:
        """After an epoch's validation and before its checkpoint."""

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.state_keys}

    def load_state_dict(self, state: dict) -> None:
        for k in self.state_keys:
            setattr(self, k, state[k])


def options(cls: type) -> dict[str, Option]:
    """A remedy's options: the keyword arguments of its `__init__`, each with its declaration."""
    return declared(cls)


def keys(cls: type[Remedy]) -> list[str]:
    """The `remedy` keys a remedy reads: its switch, then its options."""
    return [cls.switch] + [k for k in options(cls) if k != cls.switch]


REMEDIES: dict[str, type[Remedy]] = {}


register = registrar(REMEDIES, "remedies")


def build_remedies(cfg: Any) -> list[Remedy]:
    """The remedies `cfg` asks for, in the order their hooks run: one with a phase of its own
    first (its beta and its phase come before the others'), then the registry's order."""
    chosen = [r for cls in REMEDIES.values() if (r := cls.from_config(cfg)) is not None]
    return sorted(chosen, key=lambda r: "phase" not in r.needs)


def check_needs(remedies: list[Remedy], model_kind: str) -> None:
    """Each remedy gets what it declares it needs, else a one-line ConfigError."""
    for r in remedies:
        unknown = set(r.needs) - set(NEEDS)
        if unknown:
            raise ConfigError(f"remedy {r.name} needs {sorted(unknown)[0]!r}, which no loop "
                              f"provides: its `needs` take {sorted(NEEDS)}")
        if model_kind == "lm" and {"latent", "encoder"} & set(r.needs):
            raise ConfigError(f"remedy.{r.switch} ({r.name}) needs a latent: model.kind=lm has "
                              f"none; unset it or use model=vae")
    phased = [r for r in remedies if "phase" in r.needs]
    if len(phased) > 1:
        raise ConfigError(f"remedies {phased[0].name} and {phased[1].name} both need a phase of "
                          f"their own: turn one off (remedy.{phased[1].switch})")


# --- what remedies do to a model ---------------------------------------------------------------


def encoder_parameters(model: TextVAE) -> Iterator[nn.Parameter]:
    return model.encoder_parameters()


def update_only(model: TextVAE, part: str) -> None:
    """Drop the gradients of the other part, so the optimizer step leaves it (and its Adam
    moments) untouched: Adam skips parameters whose .grad is None."""
    encoder = {id(p) for p in encoder_parameters(model)}
    for p in model.parameters():
        if (id(p) in encoder) != (part == "encoder"):
            p.grad = None
