"""The per-sentence reconstruction term of the model: sum of token NLLs (docs/protocol.md).

A score of the decoder's logits, with the model (vae_text.model.textvae) as its one caller in training;
the objectives receive it per sentence and never see logits.
"""

from __future__ import annotations

import torch
from torch import Tensor


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
