"""Decoding sentences from latent codes: greedy, ancestral sampling (temperature, top-k, top-p)
and beam search.

Every strategy stops a sentence at its first <eos> and copes with one that never emits it:
`max_len` tokens at most, then the sentence is cut. Results are token ids without <bos>/<eos>.
No strategy ever picks <pad> or <bos> (they are never targets, so a trained model gives them
almost no mass; an untrained one would fill sentences with them): sampling draws from the model's
distribution renormalised over the other tokens, and beam search scores with the model's own
log-probabilities.
Sampling draws from an explicit `torch.Generator`, so a seeded call is reproducible. The decoder
is driven through its protocol only (`start`, `step`, `reorder`: vae_text.model.decoders).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vae_text.config import DecodeConfig
from vae_text.model.textvae import TextVAE


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Set to -inf every logit outside the top-k and outside the top-p nucleus (B, V)."""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass before it already reaches top_p (the first is always kept)
        drop_sorted = probs.cumsum(-1) - probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def forbid_specials(logits: Tensor, model: TextVAE) -> Tensor:
    """Scores (B, V) with <pad> and <bos> set to -inf: tokens no sentence contains."""
    return logits.index_fill(-1, torch.tensor([model.pad_id, model.bos_id], device=logits.device),
                             float("-inf"))


@torch.no_grad()
def decode(model: TextVAE, z: Tensor | None, cfg: DecodeConfig | None = None,
           generator: torch.Generator | None = None, batch_size: int | None = None) -> list[list[int]]:
    """Decode z (B, Z) (or `batch_size` sentences of a model without latent) into token ids."""
    cfg = cfg or DecodeConfig()
    was_training = model.training
    model.eval()
    try:
        if cfg.strategy == "beam":
            return _beam(model, z, cfg, batch_size)
        return _stepwise(model, z, cfg, generator, batch_size)
    finally:
        model.train(was_training)


def greedy_decode(model: TextVAE, z: Tensor | None, max_len: int = 50,
                  batch_size: int | None = None) -> list[list[int]]:
    return decode(model, z, DecodeConfig("greedy", max_len=max_len), batch_size=batch_size)


def _start(model: TextVAE, z: Tensor | None, batch_size: int | None) -> tuple[int, torch.device]:
    batch = z.shape[0] if z is not None else batch_size
    if batch is None:
        raise ValueError("a model without latent needs batch_size")
    return batch, next(model.parameters()).device


def _stepwise(model, z, cfg, generator, batch_size):
    batch, device = _start(model, z, batch_size)
    inputs = torch.full((batch,), model.bos_id, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    state, steps = model.decoder.start(z, batch), []
    for _ in range(cfg.max_len):
        logits, state = model.decoder.step(inputs, state)
        logits = forbid_specials(logits.float(), model)  # (B, V)
        if cfg.strategy == "greedy" or cfg.temperature == 0:
            nxt = logits.argmax(-1)
        else:
            logits = logits / cfg.temperature
            if cfg.strategy == "top_k":
                logits = filter_logits(logits, top_k=cfg.top_k)
            elif cfg.strategy == "top_p":
                logits = filter_logits(logits, top_p=cfg.top_p)
            probs = logits.softmax(-1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0].to(device)
        nxt = nxt.masked_fill(done, model.pad_id)
        steps.append(nxt)
        done |= nxt == model.eos_id
        if bool(done.all()):
            break
        inputs = nxt
    ids = torch.stack(steps, 1).tolist()
    return [_until_eos(row, model.eos_id, model.pad_id) for row in ids]


def _beam(model, z, cfg, batch_size):
    """Beam search, all sentences' beams in one batch (B * beam rows); the finished hypothesis
    with the best length-normalised log-probability wins."""
    batch, device = _start(model, z, batch_size)
    k = cfg.beam_size
    zz = z.repeat_interleave(k, 0) if z is not None else None  # (B*k, Z)
    inputs = torch.full((batch * k,), model.bos_id, dtype=torch.long, device=device)
    scores = torch.zeros(batch, k, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: keep one
    history = torch.zeros(batch, k, 0, dtype=torch.long, device=device)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    done = [False] * batch
    state = model.decoder.start(zz, batch * k)
    for t in range(cfg.max_len):
        logits, state = model.decoder.step(inputs, state)
        logp = forbid_specials(logits.float().log_softmax(-1), model)  # (B*k, V)
        vocab = logp.shape[-1]
        total = (scores[:, :, None] + logp.view(batch, k, vocab)).view(batch, k * vocab)
        top, idx = total.topk(2 * k, dim=-1)  # room for beams that end here
        beam, token = idx // vocab, idx % vocab
        new_scores = torch.full((batch, k), float("-inf"), device=device)
        new_beam = torch.zeros(batch, k, dtype=torch.long, device=device)
        new_token = torch.zeros(batch, k, dtype=torch.long, device=device)
        for b in range(batch):
            if done[b]:  # this sentence is settled: its rows idle until all are
                continue
            kept = 0
            for j in range(2 * k):
                score = float(top[b, j])
                if score == float("-inf") or kept == k:
                    break
                seq = history[b, beam[b, j]].tolist()
                if int(token[b, j]) == model.eos_id:
                    finished[b].append((_normalised(score, t + 1, cfg.length_penalty), seq))
                    continue
                new_scores[b, kept], new_beam[b, kept], new_token[b, kept] = score, beam[b, j], token[b, j]
                kept += 1
        rows = (torch.arange(batch, device=device)[:, None] * k + new_beam).view(-1)
        state = model.decoder.reorder(state, rows)
        history = torch.cat([history.gather(1, new_beam[:, :, None].expand(-1, -1, history.shape[2])),
                             new_token[:, :, None]], dim=2)
        scores = new_scores
        inputs = new_token.view(-1)
        # A sentence is done when it has k finished hypotheses and none of its open beams, at
        # its current length, beats the best of them (Hugging Face's heuristic; with beam 1
        # this is exactly greedy decoding, whatever the length penalty).
        best_open = scores.max(-1).values
        for b in range(batch):
            if len(finished[b]) >= k and not done[b]:
                done[b] = max(f for f, _ in finished[b]) >= _normalised(
                    float(best_open[b]), t + 1, cfg.length_penalty)
        if all(done):
            break
    out = []
    for b in range(batch):
        if not finished[b]:  # no beam ever emitted <eos>: the best open one, cut at max_len
            finished[b].append((0.0, history[b, int(scores[b].argmax())].tolist()))
        out.append(max(finished[b], key=lambda f: f[0])[1])
    return out


def _normalised(score: float, length: int, alpha: float) -> float:
    return score / (length ** alpha) if alpha else score


def _until_eos(ids: list[int], eos_id: int, pad_id: int) -> list[int]:
    out = []
    for i in ids:
        if i == eos_id:
            break
        if i != pad_id:
            out.append(i)
    return out
