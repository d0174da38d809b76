"""The sentence VAE (Bowman et al. 2016) and the LSTM language-model baseline.

    tokens -> Embedding -> LSTM encoder -> GaussianHead (mu, logvar) -> z = mu + sigma * eps
    z -> Decoder: LSTM over <bos> w1 .. wn (z as its initial state and/or appended to each input)
      -> Linear -> logits over the vocabulary, scored against w1 .. wn <eos>

The decoder is always unidirectional (a bidirectional one would see the words it predicts).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from vae_text.config import ModelConfig
from vae_text.objective import gaussian_kl, sentence_nll


@dataclass
class Output:
    rec: Tensor  # (B,) reconstruction NLL of each sentence, summed over its tokens
    kl: Tensor  # (B, Z) KL(q(z|x) || p(z)) per latent dimension (Z = 0 for the language model)
    mu: Tensor | None = None  # (B, Z)
    logvar: Tensor | None = None  # (B, Z)


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


def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None,
                   eps: Tensor | None = None) -> Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I) drawn here unless given (B, Z)."""
    if eps is None:
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def decoder_inputs(tokens: Tensor, bos_id: int, eos_id: int, pad_id: int) -> Tensor:
    """<bos> w1 .. wn from targets w1 .. wn <eos> (B, T); the shifted <eos> becomes padding."""
    bos = torch.full_like(tokens[:, :1], bos_id)
    inputs = torch.cat([bos, tokens[:, :-1]], dim=1)
    return inputs.masked_fill(inputs == eos_id, pad_id)


class Encoder(nn.Module):
    """Embedding + LSTM; returns the last layer's final hidden state (both directions)."""

    def __init__(self, vocab_size: int, cfg: ModelConfig, pad_id: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.embed_size, padding_idx=pad_id)
        self.lstm = nn.LSTM(cfg.embed_size, cfg.encoder_hidden, cfg.encoder_layers,
                            batch_first=True, bidirectional=cfg.bidirectional)
        self.directions = 2 if cfg.bidirectional else 1
        self.out_size = cfg.encoder_hidden * self.directions

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        packed = pack_padded_sequence(self.embed(tokens), lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        _, (h, _) = self.lstm(packed)  # h: (layers * directions, B, H), layer-major
        batch, hidden = h.shape[1], h.shape[2]
        last = h.view(self.lstm.num_layers, self.directions, batch, hidden)[-1]  # (dirs, B, H)
        return last.transpose(0, 1).reshape(batch, self.out_size)  # (B, dirs * H): [fwd, bwd]


class GaussianHead(nn.Module):
    """Linear map to the mean and log-variance of a diagonal Gaussian q(z|x).

    With `bn_gamma` (BN-VAE, Zhu et al. 2020) mu is batch-normalised with a fixed scale gamma and
    a learnt shift: over a batch each dimension of mu has variance gamma^2, which keeps the
    expected KL at least latent_size * gamma^2 / 2 and so prevents collapse.
    """

    def __init__(self, in_size: int, latent_size: int, bn_gamma: float | None = None):
        super().__init__()
        self.linear = nn.Linear(in_size, 2 * latent_size)
        self.mu_bn = None
        if bn_gamma is not None:
            self.mu_bn = nn.BatchNorm1d(latent_size)
            self.mu_bn.weight.requires_grad_(False)
            with torch.no_grad():
                self.mu_bn.weight.fill_(bn_gamma)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.linear(h).chunk(2, dim=-1)
        if self.mu_bn is not None:
            mu = self.mu_bn(mu)
        return mu, logvar


class Decoder(nn.Module):
    """Unidirectional LSTM language model, optionally conditioned on z (latent_size > 0)."""

    def __init__(self, vocab_size: int, cfg: ModelConfig, latent_size: int, pad_id: int):
        super().__init__()
        self.latent_size = latent_size
        self.concat = latent_size > 0 and cfg.conditioning in ("concat", "both")
        self.init = latent_size > 0 and cfg.conditioning in ("init", "both")
        self.layers, self.hidden = cfg.decoder_layers, cfg.decoder_hidden
        self.embed = nn.Embedding(vocab_size, cfg.embed_size, padding_idx=pad_id)
        in_size = cfg.embed_size + (latent_size if self.concat else 0)
        self.lstm = nn.LSTM(in_size, self.hidden, self.layers, batch_first=True)
        self.init_state = nn.Linear(latent_size, 2 * self.layers * self.hidden) if self.init else None
        self.embed_dropout = nn.Dropout(cfg.embed_dropout)
        self.output_dropout = nn.Dropout(cfg.output_dropout)
        self.proj = nn.Linear(self.hidden, vocab_size)

    def initial_state(self, z: Tensor | None) -> tuple[Tensor, Tensor] | None:
        if self.init_state is None:
            return None
        batch = z.shape[0]
        state = self.init_state(z).view(batch, 2, self.layers, self.hidden)
        h0 = torch.tanh(state[:, 0]).transpose(0, 1).contiguous()  # (layers, B, H)
        c0 = state[:, 1].transpose(0, 1).contiguous()
        return h0, c0

    def hidden_states(self, inputs: Tensor, z: Tensor | None,
                      state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple]:
        """LSTM outputs (B, T, H) for input ids (B, T); `state` continues a previous call."""
        x = self.embed_dropout(self.embed(inputs))  # (B, T, E)
        if self.concat:
            x = torch.cat([x, z[:, None, :].expand(-1, x.shape[1], -1)], dim=-1)
        if state is None:
            state = self.initial_state(z)
        return self.lstm(x, state)

    def logits(self, h: Tensor) -> Tensor:
        return self.proj(self.output_dropout(h))


class TextVAE(nn.Module):
    """Sentence VAE; with `kind="lm"` the same decoder without a latent (the LM baseline)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, pad_id: int = 0, bos_id: int = 1,
                 eos_id: int = 2, unk_id: int = 3):
        super().__init__()
        self.cfg = cfg
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = pad_id, bos_id, eos_id, unk_id
        self.has_latent = cfg.kind == "vae"
        self.latent_size = cfg.latent_size if self.has_latent else 0
        if self.has_latent:
            self.encoder = Encoder(vocab_size, cfg, pad_id)
            self.head = GaussianHead(self.encoder.out_size, cfg.latent_size, cfg.bn_gamma)
        self.decoder = Decoder(vocab_size, cfg, self.latent_size, pad_id)
        self.use_mean = not cfg.sample_z  # z = mu (the autoencoder, and pretraining's AE phase)
        self.word_dropout_rate = cfg.word_dropout  # the trainer anneals it when configured

    def encode(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior parameters mu, logvar (B, Z) for sentences `tokens` (B, T) of `lengths`."""
        return self.head(self.encoder(tokens, lengths))

    def sample_z(self, mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None,
                 eps: Tensor | None = None) -> Tensor:
        return mu if self.use_mean else reparameterize(mu, logvar, generator, eps)

    def reconstruction(self, tokens: Tensor, z: Tensor | None,
                       generator: torch.Generator | None = None,
                       word_noise: Tensor | None = None) -> Tensor:
        """Sum of token NLLs per sentence (B,) given z; padding is never scored."""
        inputs = decoder_inputs(tokens, self.bos_id, self.eos_id, self.pad_id)
        if self.training:
            inputs = word_dropout(inputs, self.word_dropout_rate, self.unk_id,
                                  (self.bos_id, self.pad_id), generator, word_noise)
        h, _ = self.decoder.hidden_states(inputs, z)  # (B, T, H)
        mask = tokens != self.pad_id
        rows = torch.arange(tokens.shape[0], device=tokens.device)[:, None].expand_as(tokens)
        logits = self.decoder.logits(h[mask])  # (N, V): only real tokens reach the projection
        return sentence_nll(logits, tokens[mask], rows[mask], tokens.shape[0])

    def forward(self, tokens: Tensor, lengths: Tensor, generator: torch.Generator | None = None,
                eps: Tensor | None = None, word_noise: Tensor | None = None) -> Output:
        """rec (B,) and KL (B, Z) of sentences `tokens` (B, T); the noise of z and of word dropout
        is drawn from `generator`, or given as `eps` (B, Z) and `word_noise` (B, >= T)."""
        if not self.has_latent:
            rec = self.reconstruction(tokens, None, generator, word_noise)
            return Output(rec, rec.new_zeros(rec.shape[0], 0))
        mu, logvar = self.encode(tokens, lengths)
        z = self.sample_z(mu, logvar, generator, eps)
        rec = self.reconstruction(tokens, z, generator, word_noise)
        return Output(rec, gaussian_kl(mu, logvar), mu, logvar)


def build_model(cfg: ModelConfig, tokenizer) -> TextVAE:
    """The one way to make a model: from its config and the tokenizer's vocabulary."""
    t = tokenizer
    model = TextVAE(cfg, len(t), t.pad_id, t.bos_id, t.eos_id, t.unk_id)
    if cfg.init != "default":
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
