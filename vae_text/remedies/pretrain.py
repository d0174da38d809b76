"""Encoder pretraining (Li et al. 2019): train as an autoencoder (beta = 0, z = mu) for a phase,
re-initialise the decoder, then train the VAE (with the encoder the autoencoder learnt)."""

from __future__ import annotations

import logging
from typing import Annotated

import torch

from vae_text.core.errors import ConfigError
from vae_text.core.options import Range
from vae_text.model.textvae import TextVAE, initialize
from vae_text.remedies.base import Loop, Phase, Remedy, register

log = logging.getLogger("vae_text")


def reinitialize_decoder(model: TextVAE, scheme: str = "default") -> None:
    """Fresh random weights for every layer of the decoder (the encoder keeps what it learnt),
    drawn as the model's own init (`model.init`) drew them."""
    initialize(model.decoder, scheme)


@register
class EncoderPretraining(Remedy):
    name = "pretrain"
    switch = "pretrain_epochs"
    needs = ("latent", "phase")
    state_keys = ("active",)

    def __init__(self, pretrain_epochs: Annotated[int, Range(ge=0)] = 0,
                 pretrain_converge: bool = False):
        if pretrain_converge and not pretrain_epochs:  # the switch is off: it would do nothing
            raise ConfigError("remedy.pretrain_converge=true needs remedy.pretrain_epochs=<N> (the "
                              "autoencoder phase's cap, e.g. 20): without it encoder pretraining is off")
        # converge: the AE phase as a run of its own (best val rec, the lr plateau rule), ending
        # at train.max_lr_decays decays or after pretrain_epochs; the VAE starts from its best
        self.epochs, self.converge = pretrain_epochs, pretrain_converge
        self.active = True

    def phase(self) -> Phase | None:
        if not self.active:
            return None
        return Phase("pretraining", self.epochs, "rec" if self.converge else None)

    def start(self, loop: Loop) -> None:
        if self.active:
            loop.model.use_mean = True

    def beta(self, loop: Loop, beta: float) -> float:
        return 0.0 if self.active else beta  # the autoencoder phase: no KL term at all

    def end_epoch(self, loop: Loop) -> None:
        """Keep the autoencoder's encoder, start the decoder afresh, train the VAE."""
        if not self.active:
            return
        ended = loop.phase_epochs >= self.epochs
        if not (ended or (self.converge and loop.out_of_lr_decays())):
            return
        if self.converge:  # Li et al.'s code continues from the best autoencoder
            loop.load_best()
        loop.save("pretrained.pt")
        cfg = loop.model.cfg
        with torch.random.fork_rng(devices=[]):  # the same fresh decoder on every rank
            torch.manual_seed(loop.seed + loop.step)
            reinitialize_decoder(loop.model, cfg.init)
        self.active = False
        loop.new_phase()
        loop.model.use_mean = not cfg.sample_z
        log.info("encoder pretraining done at step %d: decoder re-initialised, VAE phase starts",
                 loop.step)
