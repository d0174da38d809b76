"""Training procedures against posterior collapse that change the loop, not the loss
(docs/remedies.md; free bits, annealing and word dropout live in objective.py and model.py).

- Aggressive inference training (He et al. 2019): before each decoder update, update the encoder
  alone on fresh batches until its loss stops improving; stop being aggressive once validation MI
  stops rising.
- Encoder pretraining (Li et al. 2019): train as an autoencoder (beta = 0, z = mu), re-initialise
  the decoder, then train the VAE.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from vae_text.model import TextVAE


def encoder_parameters(model: TextVAE) -> Iterator[nn.Parameter]:
    yield from model.encoder.parameters()
    yield from model.head.parameters()


def update_only(model: TextVAE, part: str) -> None:
    """Drop the gradients of the other part, so the optimizer step leaves it (and its Adam
    moments) untouched: Adam skips parameters whose .grad is None."""
    encoder = {id(p) for p in encoder_parameters(model)}
    for p in model.parameters():
        if (id(p) in encoder) != (part == "encoder"):
            p.grad = None


def aggressive_encoder_updates(model: TextVAE, optimizer: torch.optim.Optimizer,
                               next_batch: Callable[[int], object],
                               loss_fn: Callable[[object], Tensor | tuple[Tensor, float]], clip_norm: float | None,
                               max_inner: int = 100, check_every: int = 10) -> int:
    """He et al.'s inner loop: encoder-only steps on batches `next_batch(i)` until the mean loss
    of the last `check_every` steps is no better than that of the window before (or `max_inner`
    steps). Returns the number of inner steps taken.

    `loss_fn` returns the loss to differentiate, or (that loss, the value to judge progress by):
    in a distributed run the whole batch's loss, the same on every rank, so all stop together.
    """
    previous, window, steps = float("inf"), 0.0, 0
    for i in range(max_inner):
        loss = loss_fn(next_batch(i))
        loss, value = loss if isinstance(loss, tuple) else (loss, None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        update_only(model, "encoder")
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(encoder_parameters(model), clip_norm)
        optimizer.step()
        window += loss.item() if value is None else value
        steps += 1
        if steps % check_every == 0:
            if window >= previous:
                break
            previous, window = window, 0.0
    return steps


@torch.no_grad()
def reinitialize_decoder(model: TextVAE) -> None:
    """Fresh random weights for every layer of the decoder (the encoder keeps what it learnt)."""
    for module in model.decoder.modules():
        if module is not model.decoder and hasattr(module, "reset_parameters"):
            module.reset_parameters()
