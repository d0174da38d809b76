"""The importance-weighted bound as the training objective (Burda, Grosse & Salakhutdinov 2016
"Importance weighted autoencoders"), with the doubly reparameterised encoder gradient as an option
(Tucker, Lawson, Gu & Maddison 2019 "Doubly reparameterized gradient estimators for Monte Carlo
objectives").

    log w_k = log p(x|z_k) + beta * (log p(z_k) - log q(z_k|x)),   z_1 .. z_K ~ q(z|x) i.i.d.
    L_K = log (1/K) sum_k w_k;   loss = -L_K averaged over the batch's sentences

At beta = 1 this is Burda et al.'s bound: L_1 = ELBO <= L_K <= L_{K+1} <= log p(x). beta (the
KL-weight schedule) weighs the log-ratio, so KL annealing works as with the ELBO: at K = 1 the
loss is rec + beta * (log q - log p), the beta-ELBO with its single-sample KL.

DReG: with q's parameters held fixed inside log q, the encoder's gradient is
sum_k w~_k (1 - beta + beta w~_k) d log w_k / dz_k dz_k/dphi (w~ the normalised weights): the
score term of q, whose expectation is zero and whose variance grows with K (Rainforth et al. 2018
"Tighter variational bounds are not necessarily better"), is replaced by its reparameterised
equivalent. At beta = 1 the factor is Tucker et al.'s w~_k^2; the decoder's and prior's gradients
are the plain bound's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vae_text.core.options import PositiveInt
from vae_text.objectives.base import Objective, StepInput, StepOutput, register
from vae_text.objectives.shares import batch_means, by_sentence, refuse_free_bits, scheduled_beta


def log_weights(rec: Tensor, log_pz: Tensor, log_qz: Tensor, beta: float = 1.0) -> Tensor:
    """log w = log p(x|z) + beta (log p(z) - log q(z|x)), from rec = -log p(x|z); any shape."""
    return -rec + beta * (log_pz - log_qz)


def iw_bound(log_w: Tensor) -> Tensor:
    """L_K = log (1/K) sum_k w_k of each sentence: log_w (N, K) -> (N,)."""
    return torch.logsumexp(log_w, dim=-1) - math.log(log_w.shape[-1])


def dreg_surrogate(log_w: Tensor, z: Tensor, beta: float = 1.0) -> Tensor:
    """L_K (N,) in value, with the DReG gradient: log_w (N, K) must use log q(z|x) with q's
    parameters detached, z (N * K, ...) the reparameterised draws it was computed from, rows
    sentence-major.

    sum_k w~_k log w_k gives the generative parameters the plain bound's gradient and z the
    gradient w~_k d log w_k / dz_k; a hook on z scales row k by (1 - beta + beta w~_k).
    """
    w = torch.softmax(log_w.detach(), dim=-1)  # (N, K) the normalised weights
    if z.requires_grad:
        scale = (1 - beta + beta * w).reshape(z.shape[0], *(1,) * (z.dim() - 1)).to(z.dtype)
        z.register_hook(lambda grad: grad * scale)
    return iw_bound(log_w).detach() + (w * (log_w - log_w.detach())).sum(-1)


@register
class Iwae(Objective):
    """-L_K with `samples` = K draws a sentence; beta = objective.kl_weight times the schedule
    (on the log-ratio); `dreg` the doubly reparameterised encoder gradient."""

    name = "iwae"

    def __init__(self, cfg, samples: PositiveInt = 5, dreg: bool = False):
        super().__init__(cfg)
        refuse_free_bits(cfg, self.name)
        self.samples, self.dreg = samples, dreg

    def beta(self, step: int) -> float:
        return scheduled_beta(self.cfg, step)

    def __call__(self, inp: StepInput) -> StepOutput:
        out, K, B = inp.out, inp.samples, inp.batch_size
        q, z = out.posterior, out.z
        rec = out.rec.float()  # (R,) R = rows of this share = its sentences * K
        log_pz = inp.prior.log_prob(z).float()  # (R,)
        log_qz = q.log_prob(z).float()  # (R,) of its own draws (IAF: from the forward pass)
        log_w1 = by_sentence(log_weights(rec, log_pz, log_qz), K)  # (N, K) at beta = 1
        if self.dreg:
            log_qz_fixed = q.detached().log_prob(z).float()
            log_w = by_sentence(log_weights(rec, log_pz, log_qz_fixed, inp.beta), K)
            bound = dreg_surrogate(log_w, z, inp.beta)  # (N,)
        else:
            bound = iw_bound(by_sentence(log_weights(rec, log_pz, log_qz, inp.beta), K))
        loss = -bound.sum() * inp.share / B
        stats = batch_means(inp, {
            "loss": -bound.sum() * inp.share,
            "rec": rec.sum() * inp.share / K,
            "kl": out.kl.float().sum() * inp.share / K,  # closed form where there is one
            "iw_bound": iw_bound(log_w1).sum() * inp.share,  # L_K at beta = 1
        })
        return StepOutput(loss, stats)
