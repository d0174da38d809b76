"""Decoding sentences from a latent code.

Every strategy stops a sentence at its first <eos> and copes with one that never emits it
(`max_len` caps it).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vae_text.model import TextVAE


@torch.no_grad()
def greedy_decode(model: TextVAE, z: Tensor | None, max_len: int = 100,
                  batch_size: int | None = None) -> list[list[int]]:
    """Argmax decoding from z (B, Z) (or `batch_size` sentences for a model without latent).

    Returns token ids per sentence, without <bos> and without the final <eos>.
    """
    was_training = model.training
    model.eval()
    batch = z.shape[0] if z is not None else batch_size
    device = next(model.parameters()).device
    inputs = torch.full((batch, 1), model.bos_id, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    state, steps = None, []
    for _ in range(max_len):
        h, state = model.decoder.hidden_states(inputs, z, state)  # (B, 1, H)
        nxt = model.decoder.logits(h[:, -1]).argmax(-1)  # (B,)
        nxt = nxt.masked_fill(done, model.pad_id)
        steps.append(nxt)
        done |= nxt == model.eos_id
        if bool(done.all()):
            break
        inputs = nxt[:, None]
    model.train(was_training)
    ids = torch.stack(steps, 1).tolist() if steps else [[] for _ in range(batch)]
    return [_until_eos(row, model.eos_id, model.pad_id) for row in ids]


def _until_eos(ids: list[int], eos_id: int, pad_id: int) -> list[int]:
    out = []
    for i in ids:
        if i == eos_id:
            break
        if i != pad_id:
            out.append(i)
    return out
