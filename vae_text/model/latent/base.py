"""Latent distributions: posterior families q(z|x) and priors p(z), the one home of their maths.

    encoder features (B, F) -> head (POSTERIORS[model.posterior]) -> Posterior q(z|x), batch (B,)
    PRIORS[model.prior]: an nn.Module p(z) (it may learn parameters)

Shapes follow torch.distributions: a posterior describes B sentences; a sample or a point of the
latent space is (*S, B, Z) for any sample shape S, and `log_prob` broadcasts z against the batch,
so z (c, 1, Z) against a posterior over N sentences gives log q(z_i | x_j) for every pair (c, N).

The KL term of the objective is `kl_term(q, prior, z)`: closed form when one is registered for the
(posterior, prior) pair with `register_kl` (per dimension when both factorise over dimensions),
otherwise the single-sample Monte-Carlo estimate log q(z|x) - log p(z) at the posterior's own
sample z (Kingma & Welling 2014), which is unbiased.

Adding a family: a `Posterior` dataclass, a head module `head(features) -> Posterior` built as
`Head(in_size, latent_size, **options)` with a `noise_size` attribute (standard-normal draws per
sample), `family` (its Posterior class) and `support` ("real" or "sphere"), whose keyword-only
__init__ arguments are its options (`model.posterior_args`), an entry in POSTERIORS,
`conf/model/posterior/<name>.yaml`. The families beyond the Gaussian live in their own modules,
in the sibling modules vmf (vMF, uniform sphere), mixture (mixture of Gaussians, VampPrior)
and flow (IAF), which the package imports; docs/latents.md describes them.
Adding a prior: a `Prior` subclass built as `Prior(latent_size, **options)` whose keyword-only
arguments are its options (`model.prior_args`), an entry in PRIORS, `conf/model/prior/<name>.yaml`;
closed-form KLs are optional (`register_kl`). A prior that needs the model (a VampPrior evaluates q(z|u_k) of learned pseudo-inputs through the encoder
and head) overrides `Prior.bind`, which the model calls once it is assembled.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Annotated, TypeVar

import torch
from torch import Tensor, nn

from vae_text.core.options import Range

LOG_2PI = math.log(2 * math.pi)
P = TypeVar("P", bound="Posterior")


# --- the protocols ------------------------------------------------------------------------------


class Posterior(ABC):
    """q(z|x) for a batch of B sentences: a dataclass whose tensor fields have the batch first.

    Subclasses implement `mean`, `rsample` and `log_prob`, and `entropy` when it has a closed form.
    `index`, `cat` and `to` work on every tensor field, so the metrics can gather the posteriors
    of a whole evaluation set into one object.
    """

    @property
    @abstractmethod
    def mean(self) -> Tensor:
        """E_q[z] (B, Z): the code used for reconstructions, z = mean models and active units."""

    @property
    def noise_size(self) -> int:
        """Standard-normal draws per sample that `rsample` turns into z (Z unless said otherwise)."""
        return self.mean.shape[-1]

    @abstractmethod
    def rsample(self, sample_shape: Sequence[int] = (), eps: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised z (*S, B, Z) from standard-normal noise `eps` (*S, B, noise_size),
        drawn here (from `generator`) unless given; the same eps always gives the same z."""

    @abstractmethod
    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) summed over the latent dimensions: z (*S, B, Z) or broadcastable -> (*S, B)."""

    def entropy(self) -> Tensor | None:
        """H[q(z|x)] (B,) in closed form, or None (the metrics then use -log q at a sample)."""
        return None

    def kl(self, prior: Prior) -> Tensor | None:
        """KL(q || p) in closed form: (B, Z) per dimension, or (B, 1) for a total that does not
        split over dimensions; None when no closed form is registered for the pair."""
        fn = _closed_form(type(self), type(prior))
        return None if fn is None else fn(self, prior)

    def detached(self: P) -> P:
        """The same q(z|x) with its parameters cut from the graph: `log_prob` is then a function
        of z alone, as the doubly reparameterised gradient needs (Tucker et al. 2019)."""
        return self.map(Tensor.detach)

    def kl_estimate(self, prior: Prior, z: Tensor) -> Tensor:
        """Single-sample Monte-Carlo KL, log q(z|x) - log p(z) at q's own sample z (B, Z) -> (B,)."""
        return self.log_prob(z) - prior.log_prob(z)

    # batching: every tensor field has the batch dimension first
    def map(self: P, fn: Callable[[Tensor], Tensor]) -> P:
        """The same posterior with `fn` applied to every tensor field (detach, .double(), .cpu())."""
        return dataclasses.replace(self, **{f.name: fn(v) for f in dataclasses.fields(self)
                                            if isinstance(v := getattr(self, f.name), Tensor)})

    def index(self: P, rows) -> P:
        return self.map(lambda t: t[rows])

    def to(self: P, device: torch.device | str) -> P:
        return self.map(lambda t: t.to(device))

    def __len__(self) -> int:
        return self.mean.shape[0]

    @classmethod
    def cat(cls: type[P], parts: Sequence[P]) -> P:
        """One posterior over the sentences of all `parts`, in order."""
        first = parts[0]
        return dataclasses.replace(first, **{
            f.name: torch.cat([getattr(p, f.name) for p in parts])
            for f in dataclasses.fields(first) if isinstance(getattr(first, f.name), Tensor)})


class Prior(nn.Module, ABC):
    """p(z) over a latent of `latent_size`; an nn.Module, so a learned prior trains with the model.
    `support`: "real" (R^Z), "sphere" (the unit sphere), or "posterior" (whatever the posterior's
    is: a VampPrior); a config whose prior and posterior live on different spaces is refused.
    `feeds_encoder`: it feeds vectors to the encoder in place of word embeddings
    (`Encoder.encode_embedded`), so a config whose encoder cannot read them is refused."""

    support = "real"
    feeds_encoder = False

    def __init__(self, latent_size: int):
        super().__init__()
        self.latent_size = latent_size

    @abstractmethod
    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) summed over the latent dimensions: z (*S, Z) -> (*S)."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> Tensor:
        """n codes (n, Z) drawn from p(z) (from `generator`, on its device unless `device`)."""

    def bind(self, model: nn.Module) -> None:
        """Called once with the assembled model; a prior that needs the encoder (VampPrior)
        keeps a reference here. It must not register the model as a submodule (a cycle)."""


def _noise(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard-normal noise of `shape` on like's device and dtype, drawn on the generator's device."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


# --- closed-form KL between a posterior family and a prior ---------------------------------------

_KL: dict[tuple[type, type], Callable[[Posterior, Prior], Tensor]] = {}
_TOTAL_ONLY: set[tuple[type, type]] = set()  # closed forms that give (B, 1), not (B, Z)


def register_kl(posterior: type[Posterior], prior: type[Prior], per_dimension: bool = True):
    """Decorator: `fn(q, p)` is the closed-form KL(q || p) of these two classes (and subclasses),
    (B, Z) per dimension, or (B, 1) with `per_dimension=False`."""

    def add(fn: Callable[[Posterior, Prior], Tensor]):
        _KL[(posterior, prior)] = fn
        if not per_dimension:
            _TOTAL_ONLY.add((posterior, prior))
        return fn

    return add


def kl_per_dimension(head: type, prior: type) -> bool | None:
    """Whether the KL of a head's family (its `family` attribute) against `prior` splits over the
    latent dimensions: a closed form registered per dimension. None when the head names no family."""
    family = getattr(head, "family", None)
    if family is None:
        return None
    for (q_cls, p_cls) in _KL:
        if issubclass(family, q_cls) and issubclass(prior, p_cls):
            return (q_cls, p_cls) not in _TOTAL_ONLY
    return False


def _closed_form(posterior: type, prior: type):
    for (q_cls, p_cls), fn in _KL.items():
        if issubclass(posterior, q_cls) and issubclass(prior, p_cls):
            return fn
    return None


def kl_term(q: Posterior, prior: Prior, z: Tensor) -> Tensor:
    """The KL of the objective for each sentence: closed form (B, Z) or (B, 1) when there is one,
    else the Monte-Carlo estimate at the sample z (B, Z) that the decoder saw, as (B, 1)."""
    kl = q.kl(prior)
    return kl if kl is not None else q.kl_estimate(prior, z)[:, None]


# --- the diagonal Gaussian posterior ------------------------------------------------------------


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per dimension, closed form. Shape of `mu`."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


@dataclasses.dataclass
class DiagonalGaussian(Posterior):
    """q(z|x) = N(mu, diag(exp(logvar))), z = mu + sigma * eps (Kingma & Welling 2014)."""

    mu: Tensor  # (B, Z)
    logvar: Tensor  # (B, Z)

    @property
    def mean(self) -> Tensor:
        return self.mu

    def rsample(self, sample_shape: Sequence[int] = (), eps: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        if eps is None:
            eps = _noise((*sample_shape, *self.mu.shape), self.mu, generator)
        return self.mu + torch.exp(0.5 * self.logvar) * eps

    def log_prob(self, z: Tensor) -> Tensor:
        return -0.5 * (LOG_2PI + self.logvar + (z - self.mu).pow(2) / self.logvar.exp()).sum(-1)

    def entropy(self) -> Tensor:
        return 0.5 * self.mu.shape[-1] * LOG_2PI + 0.5 * (1 + self.logvar).sum(-1)


class GaussianHead(nn.Module):
    """Linear map from encoder features to the mean and log-variance of a diagonal Gaussian.

    With `bn_gamma` (BN-VAE, Zhu et al. 2020) mu is batch-normalised with a fixed scale gamma and
    a learnt shift: over a batch each dimension of mu has variance gamma^2, which keeps the
    expected KL at least latent_size * gamma^2 / 2 and so prevents collapse.
    """

    family = DiagonalGaussian  # the Posterior class it returns
    support = "real"  # where z lives: "real" (R^Z) or "sphere" (a prior must match)

    def __init__(self, in_size: int, latent_size: int, *,
                 bn_gamma: Annotated[float, Range(gt=0)] | None = None):
        super().__init__()
        self.noise_size = latent_size
        self.linear = nn.Linear(in_size, 2 * latent_size)
        self.mu_bn = None
        if bn_gamma is not None:
            self.mu_bn = nn.BatchNorm1d(latent_size)
            self.mu_bn.weight.requires_grad_(False)
            with torch.no_grad():
                self.mu_bn.weight.fill_(bn_gamma)

    def forward(self, h: Tensor) -> DiagonalGaussian:
        mu, logvar = self.linear(h).chunk(2, dim=-1)  # (B, Z) each
        if self.mu_bn is not None:
            if self.training and mu.shape[0] == 1:  # one sentence has no batch statistics:
                bn = self.mu_bn  # normalise it with the running ones (as at evaluation)
                mu = nn.functional.batch_norm(mu, bn.running_mean, bn.running_var, bn.weight,
                                              bn.bias, training=False, eps=bn.eps)
            else:
                mu = self.mu_bn(mu)
        return DiagonalGaussian(mu, logvar)


# --- the standard normal prior ------------------------------------------------------------------


class StandardNormal(Prior):
    """p(z) = N(0, I): no parameters."""

    def log_prob(self, z: Tensor) -> Tensor:
        return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)

    def sample(self, n: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> Tensor:
        drawn_on = generator.device if generator is not None else (device or "cpu")
        z = torch.randn(n, self.latent_size, generator=generator, device=drawn_on)
        return z if device is None else z.to(device)


@register_kl(DiagonalGaussian, StandardNormal)
def _gaussian_standard_normal(q: DiagonalGaussian, p: StandardNormal) -> Tensor:
    return gaussian_kl(q.mu, q.logvar)


# --- registries keyed by config name ------------------------------------------------------------

POSTERIORS: dict[str, type[nn.Module]] = {"gaussian": GaussianHead}
PRIORS: dict[str, type[Prior]] = {"standard_normal": StandardNormal}

