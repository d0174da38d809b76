"""The von Mises-Fisher posterior and the uniform prior on the unit hypersphere S^{d-1}
(Davidson et al. 2018 "Hyperspherical variational auto-encoders"; Xu & Durrett 2018 "Spherical
latent spaces for stable variational autoencoders").

    q(z|x) = C_d(kappa) exp(kappa mu^T z),  C_d(kappa) = kappa^{d/2-1} / ((2 pi)^{d/2} I_{d/2-1}(kappa))
    p(z)   = 1 / |S^{d-1}|,                 |S^{d-1}| = 2 pi^{d/2} / Gamma(d/2)
    KL(q || p) = kappa A_d(kappa) + log C_d(kappa) + log |S^{d-1}|,  A_d = I_{d/2} / I_{d/2-1}

The KL depends on kappa only: with kappa fixed (the published recipe) it is a constant, so it
cannot collapse to 0. Both densities are with respect to the surface measure of the sphere.

log I_nu(x) is computed here in torch (float64): the uniform asymptotic (Debye) expansion at a
high order nu + n, where it is accurate to ~1e-10 for every x, then the ratio recurrence
I_{v-1} / I_v = 2v / x + I_{v+1} / I_v down to nu (stable in that direction). Its gradient is the
identity d/dx log I_nu(x) = I_{nu+1}(x) / I_nu(x) + nu / x.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from typing import Annotated

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vae_text.core.errors import ConfigError
from vae_text.core.options import Range
from vae_text.model.latent.base import POSTERIORS, PRIORS, Posterior, Prior, _noise, register_kl

# The largest concentration: beyond it a float32 log-density kappa mu^T z has lost its precision
# (its steps are 1/100 of a nat at 1e5), and so has the KL's difference of two large terms.
KAPPA_MAX = 1e4
DEBYE_ORDER = 40.0  # the order from which the recurrence starts (at least nu + 8)
TRIES = 8  # rejection-sampler proposals carried in each sample's noise (more are rarely needed)


# --- log Bessel functions ----------------------------------------------------------------------


def _debye_log_iv(nu: float, x: Tensor) -> Tensor:
    """log I_nu(x) by the uniform asymptotic expansion in nu with four correction terms
    (Abramowitz & Stegun 9.7.7, DLMF 10.41.3): accurate for nu >~ 30, any x > 0."""
    z = x / nu
    root = torch.sqrt(1 + z * z)
    p = 1 / root
    p2 = p * p
    eta = root + torch.log(z / (1 + root))
    u1 = p * (3 - 5 * p2) / 24
    u2 = p2 * (81 - 462 * p2 + 385 * p2**2) / 1152
    u3 = p * p2 * (30375 - 369603 * p2 + 765765 * p2**2 - 425425 * p2**3) / 414720
    u4 = p2 * p2 * (4465125 - 94121676 * p2 + 349922430 * p2**2 - 446185740 * p2**3
                    + 185910725 * p2**4) / 39813120
    series = 1 + u1 / nu + u2 / nu**2 + u3 / nu**3 + u4 / nu**4
    return nu * eta - 0.5 * math.log(2 * math.pi * nu) - 0.5 * torch.log(root) + torch.log(series)


def log_iv_and_ratio(nu: float, x: Tensor) -> tuple[Tensor, Tensor]:
    """log I_nu(x) and I_{nu+1}(x) / I_nu(x) for an order nu >= 0 and x > 0, float64, no grad."""
    x = x.detach().double()
    steps = max(8, math.ceil(DEBYE_ORDER - nu))
    top = nu + steps
    log_i = _debye_log_iv(top, x)
    ratio = torch.exp(_debye_log_iv(top + 1, x) - log_i)
    for k in range(steps):  # orders top - 1 down to nu
        order = top - 1 - k
        ratio = 1 / (2 * (order + 1) / x + ratio)
        log_i = log_i - torch.log(ratio)
    return log_i, ratio


class _LogIv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, nu: float) -> Tensor:
        log_i, ratio = log_iv_and_ratio(nu, x)
        ctx.nu = nu
        ctx.save_for_backward(x, ratio.to(x.dtype))
        return log_i.to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, ratio = ctx.saved_tensors
        return grad * (ratio + ctx.nu / x), None


class _Ratio(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, nu: float) -> Tensor:
        ratio = log_iv_and_ratio(nu, x)[1].to(x.dtype)
        ctx.nu = nu
        ctx.save_for_backward(x, ratio)
        return ratio

    @staticmethod
    def backward(ctx, grad: Tensor):  # r' = 1 - r^2 - (2 nu + 1) r / x
        x, r = ctx.saved_tensors
        return grad * (1 - r * r - (2 * ctx.nu + 1) * r / x), None


def log_bessel_iv(nu: float, x: Tensor) -> Tensor:
    """log I_nu(x), differentiable in x (elementwise, the dtype of x)."""
    return _LogIv.apply(x, float(nu))


def bessel_ratio(nu: float, x: Tensor) -> Tensor:
    """I_{nu+1}(x) / I_nu(x), differentiable in x; with nu = d/2 - 1 it is A_d(kappa) = E[mu^T z]."""
    return _Ratio.apply(x, float(nu))


def vmf_log_normalizer(d: int, kappa: Tensor) -> Tensor:
    """log C_d(kappa) = (d/2 - 1) log kappa - (d/2) log(2 pi) - log I_{d/2-1}(kappa)."""
    nu = d / 2 - 1
    return nu * torch.log(kappa) - d / 2 * math.log(2 * math.pi) - log_bessel_iv(nu, kappa)


def log_sphere_area(d: int) -> float:
    """log |S^{d-1}| = log(2 pi^{d/2} / Gamma(d/2)), the surface of the unit sphere in R^d."""
    return math.log(2) + d / 2 * math.log(math.pi) - math.lgamma(d / 2)


# --- Wood's (1994) rejection sampler, from standard-normal noise --------------------------------


def wood_w(kappa: Tensor, d: int, noise: Tensor, generator_key: Tensor | None = None) -> Tensor:
    """w = mu^T z of a vMF sample (Wood 1994), from `noise` (*S, B, TRIES * (d + 1)) normals.

    Proposal: e ~ Beta((d-1)/2, (d-1)/2), made exactly from d normals g as (1 + g_1 / |g|) / 2
    (the first coordinate of a uniform point of S^{d-1}), w = (1 - (1+b) e) / (1 - (1-b) e); one
    more normal n gives the uniform u = Phi(n); accept when kappa w + (d-1) log(1 - x0 w) - c >=
    log u. The first accepted of the TRIES proposals is taken; a sample whose TRIES proposals all
    fail (rare, see TRIES) draws more from a generator seeded by its own noise, so the same noise
    always gives the same w and the distribution stays exact.
    """
    m1 = d - 1
    kappa = kappa.double()
    root = torch.sqrt(4 * kappa**2 + m1**2)
    b = m1 / (2 * kappa + root)  # = (-2 kappa + root) / (d - 1), without the cancellation
    x0 = (1 - b) / (1 + b)
    c = kappa * x0 + m1 * torch.log(4 * b / (1 + b) ** 2)  # log(1 - x0^2) = log(4b / (1+b)^2)
    tries = noise.double().unflatten(-1, (-1, d + 1))  # (*S, B, TRIES, d + 1)
    w, accept = _propose(tries, kappa[..., None], b[..., None], x0[..., None], c[..., None], m1)
    first = accept.int().argmax(-1, keepdim=True)  # the first accepted proposal
    w_out = w.gather(-1, first)[..., 0]
    missing = ~accept.any(-1)
    if missing.any():  # every proposal rejected: continue from a generator keyed by the noise
        flat_w = w_out.reshape(-1).clone()
        shape = missing.shape
        k, bb, xx, cc = (t.expand(shape).reshape(-1) for t in (kappa, b, x0, c))
        for i in missing.reshape(-1).nonzero()[:, 0].tolist():
            row = noise.reshape(-1, noise.shape[-1])[i].detach().double().cpu().numpy().tobytes()
            key = hashlib.blake2b(row, digest_size=8).digest()
            g = torch.Generator().manual_seed(int.from_bytes(key, "little") >> 1)
            while True:
                extra = torch.randn(TRIES, d + 1, generator=g, dtype=torch.float64,
                                    device="cpu").to(noise.device)
                w_try, ok = _propose(extra, k[i], bb[i], xx[i], cc[i], m1)
                if ok.any():
                    flat_w = flat_w.index_put((torch.tensor([i], device=flat_w.device),),
                                              w_try[ok.int().argmax()].reshape(1))
                    break
        w_out = flat_w.view(shape)
    return w_out


def _propose(tries: Tensor, kappa: Tensor, b: Tensor, x0: Tensor, c: Tensor, m1: int):
    g, n = tries[..., :-1], tries[..., -1]
    e = 0.5 * (1 + g[..., 0] / g.norm(dim=-1))
    w = (1 - (1 + b) * e) / (1 - (1 - b) * e)
    accept = kappa * w + m1 * torch.log1p(-x0 * w) - c >= torch.special.log_ndtr(n)
    return w, accept


# --- the posterior, its head and the prior ------------------------------------------------------


@dataclasses.dataclass
class VonMisesFisher(Posterior):
    """q(z|x) = vMF(mu, kappa) on S^{d-1}; z = H(mu) (w, sqrt(1 - w^2) v) with w from Wood's
    sampler, v uniform on S^{d-2} and H(mu) the Householder reflection taking e_1 to mu."""

    mu: Tensor  # (B, d) unit mean direction
    kappa: Tensor  # (B,) concentration

    @property
    def mean(self) -> Tensor:
        """E_q[z] = A_d(kappa) mu: the mean direction scaled by the mean resultant length."""
        return bessel_ratio(self.mu.shape[-1] / 2 - 1, self.kappa)[..., None] * self.mu

    @property
    def noise_size(self) -> int:
        d = self.mu.shape[-1]
        return (d - 1) + TRIES * (d + 1)

    def rsample(self, sample_shape: Sequence[int] = (), eps: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        d = self.mu.shape[-1]
        if eps is None:
            eps = _noise((*sample_shape, self.mu.shape[0], self.noise_size), self.mu, generator)
        v = F.normalize(eps[..., : d - 1].double(), dim=-1)  # uniform on S^{d-2}
        w = wood_w(self.kappa, d, eps[..., d - 1:])  # (*S, B), float64
        z0 = torch.cat([w[..., None], torch.sqrt((1 - w * w).clamp_min(0))[..., None] * v], -1)
        z0 = z0.to(self.mu.dtype)
        e1 = torch.zeros_like(self.mu)
        e1[..., 0] = 1
        u = F.normalize(e1 - self.mu, dim=-1, eps=1e-12)  # (B, d); H = I - 2 u u^T
        return z0 - 2 * (z0 * u).sum(-1, keepdim=True) * u

    def log_prob(self, z: Tensor) -> Tensor:
        d = self.mu.shape[-1]
        return vmf_log_normalizer(d, self.kappa) + self.kappa * (z * self.mu).sum(-1)

    def entropy(self) -> Tensor:
        d = self.mu.shape[-1]
        return -(vmf_log_normalizer(d, self.kappa) + self.kappa * bessel_ratio(d / 2 - 1, self.kappa))


class VMFHead(nn.Module):
    """Features -> vMF(mu, kappa): mu = the normalised output of a linear layer; kappa fixed
    (`kappa`, Xu & Durrett 2018) or, with `learn_kappa`, kappa = 1 + softplus(a linear layer + c)
    per sentence (Davidson et al. 2018), c chosen so that it starts near `kappa`."""

    family = VonMisesFisher
    support = "sphere"

    def __init__(self, in_size: int, latent_size: int, *,
                 kappa: Annotated[float, Range(gt=0, le=KAPPA_MAX)] = 80.0, learn_kappa: bool = False):
        super().__init__()
        if latent_size < 2:
            raise ConfigError(f"model.latent_size={latent_size} is invalid for model.posterior=vmf: "
                              "the sphere needs >= 2 dimensions")
        if learn_kappa and not kappa > 1:
            raise ConfigError(f"model.posterior_args.kappa={kappa!r} is invalid: > 1 when learned "
                              f"(model.posterior_args.learn_kappa=true)")
        self.kappa, self.learn_kappa = float(kappa), bool(learn_kappa)
        self.noise_size = (latent_size - 1) + TRIES * (latent_size + 1)
        self.linear = nn.Linear(in_size, latent_size)
        self.kappa_linear = nn.Linear(in_size, 1) if learn_kappa else None
        # softplus^-1(kappa - 1) = log(expm1(kappa - 1)), written so that it does not overflow
        self.kappa_offset = (kappa - 1) + math.log(-math.expm1(1 - kappa)) if learn_kappa else 0.0

    def forward(self, h: Tensor) -> VonMisesFisher:
        mu = F.normalize(self.linear(h), dim=-1)  # (B, d)
        if self.kappa_linear is None:
            return VonMisesFisher(mu, h.new_full((h.shape[0],), self.kappa))
        kappa = 1 + F.softplus(self.kappa_linear(h)[:, 0] + self.kappa_offset)
        return VonMisesFisher(mu, kappa)


class UniformSphere(Prior):
    """p(z) = 1 / |S^{d-1}|, uniform on the unit sphere: no parameters."""

    support = "sphere"

    def log_prob(self, z: Tensor) -> Tensor:
        return z.new_full(z.shape[:-1], -log_sphere_area(self.latent_size))

    def sample(self, n: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> Tensor:
        drawn_on = generator.device if generator is not None else (device or "cpu")
        z = F.normalize(torch.randn(n, self.latent_size, generator=generator, device=drawn_on), dim=-1)
        return z if device is None else z.to(device)


@register_kl(VonMisesFisher, UniformSphere, per_dimension=False)
def vmf_uniform_kl(q: VonMisesFisher, p: UniformSphere) -> Tensor:
    """KL(vMF(mu, kappa) || U(S^{d-1})) (B, 1): it does not depend on mu."""
    d = q.mu.shape[-1]
    kl = q.kappa * bessel_ratio(d / 2 - 1, q.kappa) + vmf_log_normalizer(d, q.kappa) + log_sphere_area(d)
    return kl[:, None]


POSTERIORS["vmf"] = VMFHead
PRIORS["uniform_sphere"] = UniformSphere
