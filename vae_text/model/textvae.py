"""The sentence VAE (Bowman et al. 2016) and the language-model baseline, assembled from parts.

    tokens -> encoder (ENCODERS[model.encoder]) -> features (B, F)
      -> posterior head (POSTERIORS[model.posterior]) -> q(z|x) -> z = q.rsample(eps)
    z -> decoder (DECODERS[model.decoder]) over <bos> w1 .. wn -> logits, scored against
      w1 .. wn <eos>;  prior p(z) (PRIORS[model.prior]) beside, for the KL and for sampling

`build_model(cfg, tokenizer)` is the one place a model is made; each part lives in its module
(vae_text.model.encoders, vae_text.model.latent, vae_text.model.decoders) behind a protocol.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vae_text.config import ModelConfig
from vae_text.model.decoders import DECODERS, Decoder
from vae_text.model.encoders import ENCODERS, Encoder
from vae_text.model.latent import POSTERIORS, PRIORS, Posterior, Prior, kl_term
from vae_text.model.nll import sentence_nll


@dataclass
class Output:
    rec: Tensor  # (B,) reconstruction NLL of each sentence, summed over its tokens
    # (B, Z) KL(q(z|x) || p(z)) per latent dimension when it has a closed form per dimension,
    # (B, 1) otherwise (a closed-form total or a single-sample estimate); (B, 0) for the LM
    kl: Tensor
    posterior: Posterior | None = None  # q(z|x) of the batch
    z: Tensor | None = None  # (B, Z) the code the decoder saw


def word_dropout(inputs: Tensor, rate: float, unk_id: int, keep_ids: tuple[int, ...],
                 generator: torch.Generator | None = None, noise: Tensor | None = None) -> Tensor:
    """Replace a fraction `rate` of decoder *input* tokens by <unk> (Bowman et al. 2016).

    Tokens whose id is in `keep_ids` (<bos>, <pad>) are never replaced. The targets are a separate
    tensor and stay clean; the encoder sees the clean sentence. `noise` (B, >= T) uniform draws may
    be given instead of being drawn here.
    """
    if rate <= 0:
        return inputs
    if noise is None:
        noise = torch.rand(inputs.shape, generator=generator, device=inputs.device)
    noise = noise[:, : inputs.shape[1]]
    drop = noise < rate  # a bool mask: an integer mask would index positions 0/1 instead
    for i in keep_ids:
        drop &= inputs != i
    return inputs.masked_fill(drop, unk_id)


def word_dropout_rate(step: int, start: float, end: float | None, steps: int) -> float:
    """The word-dropout rate at `step`: constant `start`, or linear from `start` to `end`."""
    if end is None:
        return start
    return start + (end - start) * min(1.0, step / steps)


def decoder_inputs(tokens: Tensor, bos_id: int, eos_id: int, pad_id: int) -> Tensor:
    """<bos> w1 .. wn from targets w1 .. wn <eos> (B, T); the shifted <eos> becomes padding."""
    bos = torch.full_like(tokens[:, :1], bos_id)
    inputs = torch.cat([bos, tokens[:, :-1]], dim=1)
    return inputs.masked_fill(inputs == eos_id, pad_id)


class TextVAE(nn.Module):
    """Encoder + posterior head + prior + decoder; without the first three (`encoder=None`) the
    decoder alone is the language-model baseline (`has_latent` False, `latent_size` 0)."""

    def __init__(self, cfg: ModelConfig, decoder: Decoder, encoder: Encoder | None = None,
                 head: nn.Module | None = None, prior: Prior | None = None, pad_id: int = 0,
                 bos_id: int = 1, eos_id: int = 2, unk_id: int = 3):
        super().__init__()
        self.cfg = cfg
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = pad_id, bos_id, eos_id, unk_id
        self.has_latent = encoder is not None
        self.latent_size = cfg.latent_size if self.has_latent else 0
        if self.has_latent:  # registration order = state_dict order of old checkpoints
            self.encoder = encoder
            self.head = head
        self.decoder = decoder
        if self.has_latent:
            self.prior = prior
            prior.bind(self)
        self.use_mean = not cfg.sample_z  # z = mean (the autoencoder, and pretraining's AE phase)
        self.word_dropout_rate = cfg.word_dropout  # the trainer anneals it when configured

    @property
    def noise_size(self) -> int:
        """Standard-normal draws per posterior sample (the `eps` of `forward`), 0 without latent."""
        return self.head.noise_size if self.has_latent else 0

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """The inference network: encoder and posterior head (what aggressive training updates)."""
        yield from self.encoder.parameters()
        yield from self.head.parameters()

    def encode(self, tokens: Tensor, lengths: Tensor) -> Posterior:
        """q(z|x) of sentences `tokens` (B, T) of `lengths` (B,)."""
        return self.head(self.encoder(tokens, lengths))

    def sample_z(self, q: Posterior, generator: torch.Generator | None = None,
                 eps: Tensor | None = None) -> Tensor:
        return q.mean if self.use_mean else q.rsample(eps=eps, generator=generator)

    def reconstruction(self, tokens: Tensor, z: Tensor | None,
                       generator: torch.Generator | None = None,
                       word_noise: Tensor | None = None) -> Tensor:
        """Sum of token NLLs per sentence (B,) given z; padding is never scored."""
        inputs = decoder_inputs(tokens, self.bos_id, self.eos_id, self.pad_id)
        if self.training:
            inputs = word_dropout(inputs, self.word_dropout_rate, self.unk_id,
                                  (self.bos_id, self.pad_id), generator, word_noise)
        mask = tokens != self.pad_id
        rows = torch.arange(tokens.shape[0], device=tokens.device)[:, None].expand_as(tokens)
        logits = self.decoder(inputs, z, mask)  # (N, V) for the N real target tokens
        return sentence_nll(logits, tokens[mask], rows[mask], tokens.shape[0])

    def forward(self, tokens: Tensor, lengths: Tensor, generator: torch.Generator | None = None,
                eps: Tensor | None = None, word_noise: Tensor | None = None) -> Output:
        """rec (B,) and KL (B, Z) or (B, 1) of sentences `tokens` (B, T); the noise of z and of
        word dropout is drawn from `generator`, or given as `eps` (B, noise_size) and
        `word_noise` (B, >= T)."""
        if not self.has_latent:
            rec = self.reconstruction(tokens, None, generator, word_noise)
            return Output(rec, rec.new_zeros(rec.shape[0], 0))
        q = self.encode(tokens, lengths)
        z = self.sample_z(q, generator, eps)
        rec = self.reconstruction(tokens, z, generator, word_noise)
        return Output(rec, kl_term(q, self.prior, z), q, z)


def build_model(cfg: ModelConfig, tokenizer) -> TextVAE:
    """The model of config `cfg` for `tokenizer` (its size and special ids): each part from its
    registry, with its options (`model.<part>_args`; BN-VAE's `model.bn_gamma` goes to the head)."""
    t, vocab = tokenizer, len(tokenizer)
    if cfg.kind == "lm":
        decoder = DECODERS[cfg.decoder](vocab, cfg, 0, t.pad_id, **cfg.decoder_args)
        return _initialized(TextVAE(cfg, decoder, pad_id=t.pad_id, bos_id=t.bos_id,
                                    eos_id=t.eos_id, unk_id=t.unk_id), cfg)
    # built in this order so that a seed gives the same initial weights as before the registries
    encoder = ENCODERS[cfg.encoder](vocab, cfg, t.pad_id, **cfg.encoder_args)
    posterior_args = dict(cfg.posterior_args)
    if cfg.bn_gamma is not None:
        posterior_args["bn_gamma"] = cfg.bn_gamma
    head = POSTERIORS[cfg.posterior](encoder.out_size, cfg.latent_size, **posterior_args)
    prior = PRIORS[cfg.prior](cfg.latent_size, **cfg.prior_args)
    decoder = DECODERS[cfg.decoder](vocab, cfg, cfg.latent_size, t.pad_id, **cfg.decoder_args)
    return _initialized(
        TextVAE(cfg, decoder, encoder, head, prior, t.pad_id, t.bos_id, t.eos_id, t.unk_id), cfg)


def _initialized(model: TextVAE, cfg: ModelConfig) -> TextVAE:
    if cfg.init != "default":  # PyTorch's init is what each layer drew when it was built
        initialize(model, cfg.init)
    return model


@torch.no_grad()
def initialize(module: nn.Module, scheme: str) -> None:
    """Re-initialise every weight of `module` by `scheme` ("default": each layer's own
    reset_parameters, PyTorch's init; "uniform": the published PTB recipe (He et al. 2019; Li et
    al. 2019): embeddings U(-0.1, 0.1), every other weight and bias U(-0.01, 0.01)).

    Batch-norm layers keep their init: BN-VAE's fixed scale gamma must stay what it was set to.
    """
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            continue
        if scheme == "default":
            if sub is not module and hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
            continue
        bound = 0.1 if isinstance(sub, nn.Embedding) else 0.01
        for p in sub.parameters(recurse=False):
            p.uniform_(-bound, bound)
        if isinstance(sub, nn.Embedding) and sub.padding_idx is not None:
            sub.weight[sub.padding_idx].zero_()  # padding stays a zero vector, as nn.Embedding's
