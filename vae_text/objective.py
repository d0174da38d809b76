"""The maths of the objective: KL-weight schedules, free bits and the (beta-)ELBO loss (the KL
itself comes from the latent distributions, vae_text.latent).

Conventions (docs/protocol.md): a sentence's reconstruction term is the *sum* of its token NLLs
(words + one <eos>, never padding); both rec and KL are averaged over sentences, so the KL weight
means the same thing whatever the batch size or sentence length.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# --- KL-weight schedules ------------------------------------------------------------------------
# Each schedule is a pure function of the optimizer step returning a factor in [0, 1]; the weight
# used in the loss is kl_weight * factor. To add one, write a function and register it below:
# it becomes the option `objective/schedule=<name>` and its keyword arguments, with their defaults,
# the keys of `objective.schedule` (vae_text.parts.register): the signatures are the defaults' home.


def constant(step: int) -> float:
    """beta = kl_weight at every step (beta-VAE; kl_weight = 1 is the plain VAE)."""
    return 1.0


def linear(step: int, warmup_steps: int = 10_000, start: float = 0.0) -> float:
    """Linear warm-up from `start` to 1 over `warmup_steps` steps (Kim 2018; He 2019 use 0.1).
    The default is ~7.6 PTB epochs at batch 32 (1,315 steps an epoch)."""
    if warmup_steps <= 0:
        raise ValueError(f"warmup_steps={warmup_steps} must be > 0")
    if not 0.0 <= start <= 1.0:
        raise ValueError(f"start={start} must be in [0, 1]")
    return start + (1.0 - start) * min(1.0, step / warmup_steps)


def logistic(step: int, k: float = 0.0025, x0: int = 2500) -> float:
    """Logistic annealing 1 / (1 + exp(-k (step - x0))) (Bowman et al. 2016)."""
    if k <= 0:
        raise ValueError(f"k={k} must be > 0")
    z = -k * (step - x0)
    return 1.0 / (1.0 + math.exp(z)) if z < 700 else 0.0


def cyclical(step: int, cycle_steps: int = 5_260, ratio: float = 0.5, start: float = 0.0,
             zero_ratio: float = 0.0, cycles: int | None = None) -> float:
    """Cyclical annealing (Fu et al. 2019): the warm-up repeated every `cycle_steps` steps.

    Within a cycle at position tau in [0, 1): 0 while tau < zero_ratio (an optional zero phase),
    then a linear rise from `start` to 1 over the next `ratio` of the cycle, then 1. After
    `cycles` cycles (null: never) the weight stays at 1. The default cycle is 4 PTB epochs at
    batch 32.
    """
    if cycle_steps <= 0:
        raise ValueError(f"cycle_steps={cycle_steps} must be > 0")
    if not (0 < ratio <= 1 and 0 <= zero_ratio < 1 and ratio + zero_ratio <= 1):
        raise ValueError(f"ratio={ratio}, zero_ratio={zero_ratio}: need 0 < ratio, "
                         f"0 <= zero_ratio and ratio + zero_ratio <= 1")
    if not 0.0 <= start <= 1.0:
        raise ValueError(f"start={start} must be in [0, 1]")
    if cycles is not None and step >= cycles * cycle_steps:
        return 1.0
    tau = (step % cycle_steps) / cycle_steps
    if tau < zero_ratio:
        return 0.0
    return start + (1.0 - start) * min(1.0, (tau - zero_ratio) / ratio)


SCHEDULES = {"constant": constant, "linear": linear, "logistic": logistic, "cyclical": cyclical}


def kl_weight(step: int, beta: float, name: str, **params) -> float:
    """The KL weight at `step`: `beta` times schedule `name`'s factor."""
    return beta * SCHEDULES[name](step, **params)


FREE_BITS_MODES = ("dim", "sentence", "element")


def free_bits_kl(kl: Tensor, budget: float, mode: str = "dim",
                 dim_mean: Tensor | None = None) -> Tensor:
    """The free-bits KL term summed over the sentences of `kl` (B, Z), a scalar: the one rule the
    loss and the logged loss both use.

    Below its threshold a term is the constant threshold, so it gets no gradient: the encoder may
    spend those nats for free (Kingma et al. 2016). Only the loss changes; the reported KL stays
    the KL. Modes:
    - "dim": each dimension's *batch-mean* KL is raised to budget / Z (Kingma et al.'s groups as
      dimensions). `dim_mean` (Z,) is the mean over the whole batch when `kl` holds a share of it
      (several processes); then the shares' terms add up to the whole batch's.
    - "sentence": each sentence's total KL is raised to `budget`.
    - "element": each sentence's KL in each dimension is raised to budget / Z (Li et al. 2019's
      code for PTB, its `--fb 2`).
    `budget` <= 0 turns free bits off: the plain KL sum.
    """
    if budget <= 0:
        return kl.sum()
    rows, latent = kl.shape
    if mode == "sentence":
        return torch.clamp(kl.sum(-1), min=budget).sum()
    if mode == "element":
        return torch.clamp(kl, min=budget / latent).sum()
    if mode == "dim":
        threshold = budget / latent
        keep = (kl.mean(0) if dim_mean is None else dim_mean) > threshold  # (Z,)
        return (kl * keep).sum() + (~keep).sum() * threshold * rows
    raise ValueError(f"unknown free-bits mode {mode!r}")


def free_bits(kl: Tensor, budget: float, mode: str = "dim") -> Tensor:
    """The free-bits KL term of a batch's loss (mean over its sentences), a scalar."""
    return free_bits_kl(kl, budget, mode) / kl.shape[0]


def elbo_loss(rec: Tensor, kl: Tensor, beta: float, free_nats: float = 0.0,
              mode: str = "dim", batch_size: int | None = None,
              dim_mean: Tensor | None = None) -> Tensor:
    """Training loss: rec + beta * KL (with free bits when free_nats > 0) averaged over sentences.

    `rec`: (B,) per sentence; `kl`: (B, Z) per sentence and latent dimension. For a share (rows)
    of a batch of `batch_size` sentences, with `dim_mean` its mean KL per dimension, the shares'
    losses add up to the whole batch's, and so do their gradients.
    """
    batch_size = rec.shape[0] if batch_size is None else batch_size
    return (rec.sum() + beta * free_bits_kl(kl, free_nats, mode, dim_mean)) / batch_size


def sentence_nll(logits: Tensor, targets: Tensor, rows: Tensor, batch_size: int) -> Tensor:
    """Sum of token NLLs per sentence.

    logits: (N, V) for the N real (non-pad) target tokens of a batch, targets: (N,),
    rows: (N,) the sentence index of each token. Returns (batch_size,).
    """
    if torch.is_grad_enabled() and logits.requires_grad:  # cross_entropy's values, a faster backward
        half = logits.dtype in (torch.float16, torch.bfloat16)  # (autocast) float32 maths, as there
        nll = _TokenNLL.apply(logits.float() if half else logits, targets)  # (N,)
    else:
        nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    return torch.zeros(batch_size, dtype=nll.dtype, device=nll.device).index_add_(0, rows, nll)


class _TokenNLL(torch.autograd.Function):
    """-log softmax(logits)[target] per row, (N, V) -> (N,): cross_entropy(reduction="none")'s
    values (log-softmax, then the target's entry), with the gradient (softmax - onehot(target))
    formed in the forward pass in the log-softmax's own buffer and scaled by the incoming
    gradient in place. cross_entropy's backward instead allocates and fills an (N, V) zero tensor
    and runs the log-softmax backward into another: passes over, and fresh pages of, the largest
    tensor of the step. Being scaled in place, the buffer serves one backward pass (no
    retain_graph)."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor) -> Tensor:
        logp = torch.log_softmax(logits, dim=-1)  # (N, V)
        nll = -logp.gather(1, targets[:, None]).squeeze(1)  # (N,)
        ctx.used = False
        if ctx.needs_input_grad[0]:
            grad = logp.exp_()  # softmax, in place
            grad[torch.arange(len(targets), device=grad.device), targets] -= 1.0
            ctx.save_for_backward(grad)
        return nll

    @staticmethod
    def backward(ctx, grad_nll: Tensor) -> tuple[Tensor, None]:
        if ctx.used:
            raise RuntimeError("sentence_nll's graph was backpropagated twice (retain_graph): "
                               "its saved softmax is scaled in place and used once")
        ctx.used = True
        (grad,) = ctx.saved_tensors
        return grad.mul_(grad_nll[:, None]), None
