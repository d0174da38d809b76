"""Learned mixture priors: a mixture of Gaussians and the VampPrior (Tomczak & Welling 2018
"VAE with a VampPrior").

    mog:  p(z) = sum_k pi_k N(z; m_k, diag s_k^2), pi = softmax(logits), m, log s learned
    vamp: p(z) = (1/K) sum_k q(z | u_k), u_k learned pseudo-inputs; for text u_k is a learned
          sequence of `length` input vectors that the encoder reads in place of word embeddings

Neither has a closed-form KL against a posterior: the objective uses the single-sample Monte-Carlo
estimate log q(z|x) - log p(z) at the posterior's own sample (vae_text.model.latent.kl_term), unbiased.
Generation draws a component, then z from it.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import Tensor, nn

from vae_text.core.options import PositiveInt, Range
from vae_text.model.latent.base import LOG_2PI, PRIORS, Prior


def _drawn_on(generator: torch.Generator | None, device) -> torch.device | str:
    return generator.device if generator is not None else (device or "cpu")


class MixtureOfGaussians(Prior):
    """p(z) = sum_k softmax(logits)_k N(z; means_k, diag exp(2 log_scales_k)), all learned.

    The means start at `init_spread` * N(0, I) draws (distinct components, or they would stay
    identical), the scales at 1 and the weights uniform. `init_spread` is at most 1000, far beyond
    any useful spread (the codes lie within a few units of the origin).
    """

    def __init__(self, latent_size: int, *, components: PositiveInt = 10,
                 init_spread: Annotated[float, Range(ge=0, le=1000)] = 1.0):
        super().__init__(latent_size)
        self.init_spread = float(init_spread)
        self.logits = nn.Parameter(torch.zeros(components))
        self.means = nn.Parameter(torch.empty(components, latent_size))
        self.log_scales = nn.Parameter(torch.zeros(components, latent_size))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.logits.zero_()
        self.means.normal_().mul_(self.init_spread)
        self.log_scales.zero_()

    def component_log_prob(self, z: Tensor) -> Tensor:
        """log pi_k + log N(z; m_k, s_k^2) for each component: z (*S, Z) -> (*S, K)."""
        diff = (z[..., None, :] - self.means) / self.log_scales.exp()  # (*S, K, Z)
        log_n = -0.5 * (LOG_2PI + 2 * self.log_scales + diff.pow(2)).sum(-1)
        return torch.log_softmax(self.logits, -1) + log_n

    def log_prob(self, z: Tensor) -> Tensor:
        return torch.logsumexp(self.component_log_prob(z), dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> Tensor:
        on = _drawn_on(generator, device)
        probs = torch.softmax(self.logits.detach(), -1).to(on)
        k = torch.multinomial(probs, n, replacement=True, generator=generator)  # (n,)
        eps = torch.randn(n, self.latent_size, generator=generator, device=on)
        means, log_scales = self.means.to(on), self.log_scales.to(on)
        z = means[k] + log_scales[k].exp() * eps
        return z.to(device if device is not None else self.means.device)


class VampPrior(Prior):
    """p(z) = (1/K) sum_k q(z | u_k): the posteriors of K learned pseudo-inputs (any family).

    A pseudo-input is a (length, E) sequence of vectors fed to the encoder in place of the
    embeddings of a sentence of `length` words (`Encoder.encode_embedded`), then to the posterior
    head. Its support is the posterior's. The pseudo-inputs are made in `bind`, once the model's
    encoder (and so E, its `embed_size`: the LSTM's word embeddings, the Transformer's width) is
    known, and start as N(0, 1) draws (nn.Embedding's initialisation).
    """

    support = "posterior"
    feeds_encoder = True

    def __init__(self, latent_size: int, *, components: PositiveInt = 50,
                 length: PositiveInt = 10):
        super().__init__(latent_size)
        self.components, self.length = components, length
        self._model: tuple[nn.Module, ...] = ()  # a tuple, so the model is not a submodule
        self.pseudo_inputs: nn.Parameter | None = None

    def bind(self, model: nn.Module) -> None:
        self._model = (model,)
        size = model.encoder.embed_size
        self.pseudo_inputs = nn.Parameter(torch.empty(self.components, self.length, size))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.pseudo_inputs is not None:
            self.pseudo_inputs.normal_()

    def pseudo_posterior(self):
        """q(z | u_k) of the K pseudo-inputs: a posterior over a batch of K."""
        if not self._model:
            raise RuntimeError("VampPrior is not bound to a model (TextVAE binds it when built)")
        model = self._model[0]
        u = self.pseudo_inputs
        lengths = torch.full((self.components,), self.length, dtype=torch.long, device=u.device)
        return model.head(model.encoder.encode_embedded(u, lengths))

    def log_prob(self, z: Tensor) -> Tensor:
        log_q = self.pseudo_posterior().log_prob(z.unsqueeze(-2))  # (*S, K)
        return torch.logsumexp(log_q, dim=-1) - math.log(self.components)

    def sample(self, n: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> Tensor:
        q = self.pseudo_posterior()
        on = _drawn_on(generator, device)
        k = torch.randint(self.components, (n,), generator=generator, device=on)
        eps = torch.randn(n, q.noise_size, generator=generator, device=on)
        target = self.pseudo_inputs.device
        z = q.index(k.to(target)).rsample(eps=eps.to(target))
        return z if device is None else z.to(device)


PRIORS["mog"] = MixtureOfGaussians
PRIORS["vamp"] = VampPrior
