"""An inverse autoregressive flow on top of the diagonal Gaussian (Kingma et al. 2016 "Improved
variational inference with inverse autoregressive flow").

    z_0 = mu + sigma * eps,  z_t = s_t * z_{t-1} + (1 - s_t) * m_t   (t = 1 .. T)
    (m_t, s_t) = MADE_t(z_{t-1}, h): output i depends on z_{t-1, <i} only; s_t = sigmoid(. + bias)
    log q(z_T | x) = log N(z_0; mu, sigma^2) - sum_t sum_i log s_{t,i}

h is the encoder's feature vector (the paper's context). The dimension order is reversed before
every step after the first, so that each dimension depends on all others after two steps.

`log_prob` of the posterior's own sample uses the log-determinant of its forward pass. At any
other z (the mutual information needs log q(z_i | x_j) for every pair, a VampPrior of IAF
posteriors needs it too) the flow is inverted exactly: an autoregressive step is inverted
dimension by dimension (coordinate i needs the MADE's outputs i, which depend on coordinates
< i only). `MADE.invert` computes each hidden unit once, when the coordinates it depends on are
solved (the units taken in order of their degree), so inverting a step costs one MADE pass, not
Z of them: the whole-set MI of PTB's valid set (11 million pairs) takes minutes on a CPU.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Annotated

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vae_text.core.options import PositiveInt, Range
from vae_text.model.latent.base import LOG_2PI, POSTERIORS, Posterior, _noise

MEAN_SAMPLES = 32  # antithetic pairs of the fixed noise that estimates E_q[z]
CHUNK_ELEMENTS = 2**24  # the largest (..., hidden) activation `log_prob` builds at once


class MaskedLinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, mask: Tensor):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.float(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """(z, context) -> (m, s logits), each (..., Z), output i a function of z_<i and the context
    (Germain et al. 2015): degrees 1..Z for inputs and outputs, 1..Z-1 for hidden units."""

    def __init__(self, latent_size: int, hidden: int, context_size: int):
        super().__init__()
        deg_in = torch.arange(1, latent_size + 1)
        deg_h = torch.arange(hidden) % max(1, latent_size - 1) + 1
        self.inp = MaskedLinear(latent_size, hidden, deg_h[:, None] >= deg_in[None])
        self.context = nn.Linear(context_size, hidden, bias=False)
        self.hid = MaskedLinear(hidden, hidden, deg_h[:, None] >= deg_h[None])
        self.out = MaskedLinear(hidden, 2 * latent_size, torch.cat([deg_in, deg_in])[:, None] > deg_h[None])
        # for `invert`: the hidden units by degree, and how many have degree <= d (d = 0 .. Z - 1)
        self.register_buffer("by_degree", torch.argsort(deg_h, stable=True), persistent=False)
        self.upto = [int((deg_h <= d).sum()) for d in range(latent_size)]

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """z (*S, Z) and the context's projection `self.context(h)` broadcastable to (*S, H)."""
        a = F.elu(self.inp(z) + context)
        a = F.elu(self.hid(a))
        return self.out(a).chunk(2, dim=-1)

    def invert(self, y: Tensor, context: Tensor, forget_bias: float) -> tuple[Tensor, Tensor]:
        """x (*S, Z) with y = s * x + (1 - s) * m (the IAF step, (m, s logits) = self(x)), and the
        s logits at x. Coordinate i needs outputs i, which read the hidden units of degree <= i,
        which read x_<i: each unit is computed once, when its degree comes up."""
        order, latent = self.by_degree, y.shape[-1]
        w1, b1 = (self.inp.weight * self.inp.mask)[order], self.inp.bias[order]
        w2, b2 = (self.hid.weight * self.hid.mask)[order][:, order], self.hid.bias[order]
        w3 = (self.out.weight * self.out.mask)[:, order]
        context = context[..., order]
        shape = torch.broadcast_shapes(y.shape[:-1], context.shape[:-1])
        x, a1, a2 = (y.new_empty(*shape, n) for n in (latent, len(order), len(order)))
        logits = []
        for i in range(latent):
            lo, hi = self.upto[i - 1] if i else 0, self.upto[i]
            if hi > lo:  # the units of degree i: their inputs x_<i are solved
                a1 = _put(a1, lo, F.elu(F.linear(x[..., :i], w1[lo:hi, :i], b1[lo:hi])
                                        + context[..., lo:hi]))
                a2 = _put(a2, lo, F.elu(F.linear(a1[..., :hi], w2[lo:hi, :hi], b2[lo:hi])))
            rows = [i, latent + i]
            m, s_logit = F.linear(a2[..., :hi], w3[rows, :hi], self.out.bias[rows]).expand(
                *shape, 2).chunk(2, dim=-1)
            s = torch.sigmoid(s_logit + forget_bias)
            x = _put(x, i, (y[..., i: i + 1] - (1 - s) * m) / s)
            logits.append(s_logit)
        return x, torch.cat(logits, dim=-1)


def _put(buffer: Tensor, start: int, new: Tensor) -> Tensor:
    """`buffer` with columns start.. set to `new` and those before kept. Without autograd in place
    (4x faster than growing it by `cat`); with it by `cat`, as autograd needs the columns it has
    saved unchanged."""
    if torch.is_grad_enabled():
        return torch.cat([buffer[..., :start].expand(*new.shape[:-1], start), new], dim=-1)
    buffer[..., start: start + new.shape[-1]] = new
    return buffer


class IAFFlow(nn.Module):
    """T IAF steps conditioned on the encoder features."""

    def __init__(self, latent_size: int, context_size: int, steps: int, hidden: int,
                 forget_bias: float):
        super().__init__()
        self.made = nn.ModuleList(MADE(latent_size, hidden, context_size) for _ in range(steps))
        self.forget_bias = forget_bias

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """z_T and sum_t sum_i log s_t (*S,) from z_0 (*S, Z)."""
        log_det = z.new_zeros(z.shape[:-1])
        for t, made in enumerate(self.made):
            if t:
                z = z.flip(-1)
            m, s_logit = made(z, made.context(h))
            s = torch.sigmoid(s_logit + self.forget_bias)
            z = s * z + (1 - s) * m
            log_det = log_det + F.logsigmoid(s_logit + self.forget_bias).sum(-1)
        return z, log_det

    def inverse(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """z_0 and sum_t sum_i log s_t from z_T (*S, Z), h broadcastable against it."""
        log_det = z.new_zeros(z.shape[:-1])
        for t in reversed(range(len(self.made))):
            made = self.made[t]
            x, s_logit = made.invert(z, made.context(h), self.forget_bias)
            log_det = log_det + F.logsigmoid(s_logit + self.forget_bias).sum(-1)
            z = x.flip(-1) if t else x
        return z, log_det


@dataclasses.dataclass
class IAFPosterior(Posterior):
    """q(z|x): N(mu, diag(exp(logvar))) pushed through an IAF conditioned on `context`."""

    mu: Tensor  # (B, Z)
    logvar: Tensor  # (B, Z)
    context: Tensor  # (B, F) the encoder features
    flow: IAFFlow = dataclasses.field(repr=False)
    # (z, log q(z|x)) of the last rsample: its own samples' density needs no inversion
    _last: tuple[Tensor, Tensor] | None = dataclasses.field(default=None, init=False, repr=False,
                                                            compare=False)

    @property
    def noise_size(self) -> int:
        return self.mu.shape[-1]

    def __len__(self) -> int:
        return self.mu.shape[0]

    @property
    def mean(self) -> Tensor:
        """E_q[z] by Monte Carlo with one fixed set of antithetic noise shared by every sentence
        (common random numbers: a unit the posterior ignores gets the same value for all x)."""
        g = torch.Generator().manual_seed(0)  # on the CPU: the same noise on every device
        eps = torch.randn(MEAN_SAMPLES, 1, self.mu.shape[-1], generator=g, dtype=self.mu.dtype,
                          device="cpu")
        eps = torch.cat([eps, -eps]).to(self.mu.device).expand(-1, *self.mu.shape)
        return self.rsample(eps=eps).mean(0)

    def rsample(self, sample_shape: Sequence[int] = (), eps: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        if eps is None:
            eps = _noise((*sample_shape, *self.mu.shape), self.mu, generator)
        z0 = self.mu + torch.exp(0.5 * self.logvar) * eps
        log_q0 = -0.5 * (LOG_2PI + self.logvar + eps.pow(2)).sum(-1)
        # the flow runs in its own device and dtype: the metrics keep a split's posteriors on the
        # CPU (in float64 for the MI) while the flow stays with the model on the GPU
        weight = self.flow.made[0].inp.weight
        z, log_det = self.flow(z0.to(weight), self.context.to(weight))
        z, log_det = z.to(z0), log_det.to(log_q0)
        self._last = (z, log_q0 - log_det)
        return z

    def detached(self) -> IAFPosterior:
        """Base parameters and context cut from the graph, and the flow a frozen copy: log q is
        then a function of z alone (evaluated by inverting the flow, Z * T MADE passes)."""
        flow = copy.deepcopy(self.flow).requires_grad_(False)
        return dataclasses.replace(self.map(Tensor.detach), flow=flow)

    def log_prob(self, z: Tensor) -> Tensor:
        if self._last is not None and z is self._last[0]:
            return self._last[1]
        weight = self.flow.made[0].inp.weight  # the flow runs in its own device and dtype
        mu, logvar, h = (t.to(weight) for t in (self.mu, self.logvar, self.context))
        shape = torch.broadcast_shapes(z.shape[:-1], mu.shape[:-1])  # (..., B)
        zz = z.to(weight).expand(*shape, z.shape[-1])
        rows = len(zz)  # chunks along the first dimension keep the MADE activations small
        if len(shape) > 1:
            rows = max(1, CHUNK_ELEMENTS // (shape[1:].numel() * self.flow.made[0].hid.in_features))
        parts = []
        for start in range(0, len(zz), rows):
            z0, log_det = self.flow.inverse(zz[start: start + rows], h)
            log_q0 = -0.5 * (LOG_2PI + logvar + (z0 - mu).pow(2) / logvar.exp()).sum(-1)
            parts.append(log_q0 - log_det)
        # a z so far from this posterior that inverting overflows has density 0 there, not NaN
        out_dtype = torch.promote_types(z.dtype, self.mu.dtype)
        return torch.cat(parts).nan_to_num(nan=-torch.inf).to(device=z.device, dtype=out_dtype)


class IAFHead(nn.Module):
    """Features h -> (mu, logvar) of the base Gaussian, and an IAF of `steps` MADE steps with
    `hidden` units (null: 2 Z) conditioned on h; s starts near sigmoid(forget_bias), a bias
    within +-10: further out s starts pinned near 0 or 1, and inverting a step divides by s."""

    family = IAFPosterior
    support = "real"

    def __init__(self, in_size: int, latent_size: int, *, steps: PositiveInt = 2,
                 hidden: PositiveInt | None = None,
                 forget_bias: Annotated[float, Range(ge=-10, le=10)] = 1.0):
        super().__init__()
        hidden = 2 * latent_size if hidden is None else hidden
        self.noise_size = latent_size
        self.linear = nn.Linear(in_size, 2 * latent_size)
        self.flow = IAFFlow(latent_size, in_size, steps, hidden, float(forget_bias))

    def forward(self, h: Tensor) -> IAFPosterior:
        mu, logvar = self.linear(h).chunk(2, dim=-1)
        return IAFPosterior(mu, logvar, h, self.flow)


POSTERIORS["iaf"] = IAFHead
