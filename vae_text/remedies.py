"""Training procedures against posterior collapse that change the loop, not the loss (free bits,
annealing and word dropout live in objective.py and model.py; docs/remedies.md says what each is).

Each remedy is a `Remedy`: an object with its own state (saved in checkpoints) and a few hooks the
trainer calls at fixed points; every hook is a no-op by default. `REMEDIES` maps a name to its
class, whose `from_config` returns the remedy when the `remedy` config asks for it. Adding one is a
class, an entry, its keys in `RemedyConfig` (and conf/train.yaml) and its tests.

- `EncoderPretraining` (Li et al. 2019): train as an autoencoder (beta = 0, z = mu), re-initialise
  the decoder, then train the VAE.
- `AggressiveInference` (He et al. 2019): before each decoder update, update the encoder alone on
  fresh batches until its loss stops improving; stop being aggressive once validation MI stops
  rising.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from vae_text.config import RemedyConfig
from vae_text.model import TextVAE, initialize

# The hooks get the vae_text.trainer.Trainer that calls them. Named, not imported, even for type
# checkers: the loop sits above its remedies (tests/test_architecture.py counts every import).
Trainer = Any

log = logging.getLogger("vae_text")


def encoder_parameters(model: TextVAE) -> Iterator[nn.Parameter]:
    return model.encoder_parameters()


def update_only(model: TextVAE, part: str) -> None:
    """Drop the gradients of the other part, so the optimizer step leaves it (and its Adam
    moments) untouched: Adam skips parameters whose .grad is None."""
    encoder = {id(p) for p in encoder_parameters(model)}
    for p in model.parameters():
        if (id(p) in encoder) != (part == "encoder"):
            p.grad = None


def aggressive_encoder_updates(model: TextVAE, optimizer: torch.optim.Optimizer,
                               next_batch: Callable[[int], object],
                               loss_fn: Callable[[object], Tensor | tuple[Tensor, float]], clip_norm: float | None,
                               max_inner: int = 100, check_every: int = 10) -> int:
    """He et al.'s inner loop: encoder-only steps on batches `next_batch(i)` until the mean loss
    of the last `check_every` steps is no better than that of the window before (or `max_inner`
    steps). Returns the number of inner steps taken.

    `loss_fn` returns the loss to differentiate, or (that loss, the value to judge progress by):
    in a distributed run the whole batch's loss, the same on every rank, so all stop together.
    """
    previous, window, steps = float("inf"), 0.0, 0
    for i in range(max_inner):
        loss = loss_fn(next_batch(i))
        loss, value = loss if isinstance(loss, tuple) else (loss, None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        update_only(model, "encoder")
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(encoder_parameters(model), clip_norm)
        optimizer.step()
        window += loss.item() if value is None else value
        steps += 1
        if steps % check_every == 0:
            if window >= previous:
                break
            previous, window = window, 0.0
    return steps


def reinitialize_decoder(model: TextVAE, scheme: str = "default") -> None:
    """Fresh random weights for every layer of the decoder (the encoder keeps what it learnt),
    drawn as the model's own init (`model.init`) drew them."""
    initialize(model.decoder, scheme)


class Remedy:
    """The hooks, in the order the trainer calls them. State lives in attributes listed in
    `state_keys`, which `state_dict` saves and `load_state_dict` restores."""

    name = ""  # its key in REMEDIES
    state_keys: tuple[str, ...] = ()
    extra_epochs = 0  # epochs the remedy runs before train.epochs (pretraining's AE phase)

    @classmethod
    def from_config(cls, cfg: RemedyConfig) -> Remedy | None:
        raise NotImplementedError

    def autoencoding(self) -> bool:
        """True while training is an autoencoder phase: no KL, z = mu, its own model selection."""
        return False

    def phase_monitor(self) -> str | None:
        """While autoencoding: the validation score that selects its best weights (None: none)."""
        return None

    def start(self, trainer: Trainer) -> None:
        """After the model, optimizer and state are built (or restored)."""

    def before_step(self, trainer: Trainer, beta: float) -> dict:
        """Before a training step's forward pass; returns statistics to log (numbers)."""
        return {}

    def after_backward(self, trainer: Trainer) -> None:
        """Between backward and the optimizer step (gradients may be edited)."""

    def after_validation(self, trainer: Trainer, metrics: dict, epoch_end: bool) -> None:
        """After a validation pass; `metrics` may be extended before they are logged."""

    def end_epoch(self, trainer: Trainer) -> None:
        """After an epoch's validation and before its checkpoint."""

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.state_keys}

    def load_state_dict(self, state: dict) -> None:
        for k in self.state_keys:
            setattr(self, k, state[k])


class EncoderPretraining(Remedy):
    name = "pretrain"
    state_keys = ("active",)

    def __init__(self, epochs: int, converge: bool = False):
        self.extra_epochs, self.converge = epochs, converge
        self.active = True

    @classmethod
    def from_config(cls, cfg: RemedyConfig) -> Remedy | None:
        if cfg.pretrain_epochs <= 0:
            return None
        return cls(cfg.pretrain_epochs, cfg.pretrain_converge)

    def autoencoding(self) -> bool:
        return self.active

    def phase_monitor(self) -> str | None:
        return "rec" if self.converge else None  # the autoencoder's own loss (beta = 0)

    def start(self, trainer: Trainer) -> None:
        if self.active:
            trainer.model.use_mean = True

    def end_epoch(self, trainer: Trainer) -> None:
        """Li et al. 2019: keep the autoencoder's encoder, start the decoder afresh, train the VAE."""
        if not self.active:
            return
        ended = trainer.state.epoch >= trainer.epoch_cap()
        if not (ended or (self.converge and trainer.out_of_lr_decays())):
            return
        if self.converge:  # Li et al.'s code continues from the best autoencoder
            trainer.load_best()
        trainer.save("pretrained.pt")
        with torch.random.fork_rng(devices=[]):  # the same fresh decoder on every rank
            torch.manual_seed(trainer.s.seed + trainer.state.step)
            reinitialize_decoder(trainer.model, trainer.s.model.init)
        self.active = False
        trainer.new_phase()
        trainer.model.use_mean = not trainer.s.model.sample_z
        log.info("encoder pretraining done at step %d: decoder re-initialised, VAE phase starts",
                 trainer.state.step)


class AggressiveInference(Remedy):
    name = "aggressive"
    state_keys = ("active", "best_mi")

    def __init__(self, max_inner: int, check_every: int):
        self.max_inner, self.check_every = max_inner, check_every
        self.active, self.best_mi = True, -math.inf

    @classmethod
    def from_config(cls, cfg: RemedyConfig) -> Remedy | None:
        if not cfg.aggressive:
            return None
        return cls(cfg.aggressive_max_inner, cfg.aggressive_check_every)

    def _on(self, trainer: Trainer) -> bool:
        return self.active and not trainer.autoencoding

    def before_step(self, trainer: Trainer, beta: float) -> dict:
        if not self._on(trainer):
            return {"inner_steps": 0}

        def inner_loss(item: tuple) -> tuple[Tensor, float]:
            loss, stats = trainer.loss(item[0], beta, item[1])
            return loss, stats["loss"]

        steps = aggressive_encoder_updates(trainer.model, trainer.optimizer, trainer.inner_batch,
                                           inner_loss, trainer.s.optim.clip_norm, self.max_inner,
                                           self.check_every)
        return {"inner_steps": steps}

    def after_backward(self, trainer: Trainer) -> None:
        if self._on(trainer):  # the outer step updates the decoder only
            update_only(trainer.model, "decoder")

    def after_validation(self, trainer: Trainer, metrics: dict, epoch_end: bool) -> None:
        if self._on(trainer) and epoch_end:
            if "mi" in metrics and metrics["mi"] < self.best_mi:
                self.active = False
                log.info("aggressive training off: validation MI stopped rising (%.3f < %.3f)",
                         metrics["mi"], self.best_mi)
            else:
                self.best_mi = metrics.get("mi", self.best_mi)
        metrics["aggressive"] = int(self.active)


REMEDIES: dict[str, type[Remedy]] = {cls.name: cls for cls in (EncoderPretraining,
                                                                 AggressiveInference)}


def build_remedies(cfg: RemedyConfig) -> list[Remedy]:
    """The remedies `cfg` asks for, in the registry's order (pretraining first)."""
    return [r for cls in REMEDIES.values() if (r := cls.from_config(cfg)) is not None]
