"""Evaluation metrics as functions of a model and a split (REFERENCE.md §2).

NLLs are nats per sentence (sum over its words and one <eos>), averaged over sentences; PPL divides
the total NLL by the total number of tokens (words + one <eos> per sentence). The ELBO is always
computed with beta = 1, whatever weight the KL had in training, and its PPL is named `ppl_elbo`:
it bounds the true perplexity from above, it is not it.
"""

from __future__ import annotations

import math

import torch

from vae_text.data import Split, batch_plan, iterate
from vae_text.model import TextVAE


@torch.no_grad()
def elbo_metrics(model: TextVAE, split: Split, batch_size: int = 256, seed: int = 0) -> dict:
    """rec, kl, neg_elbo (beta = 1), ppl_elbo and the per-dimension KL over a whole split.

    One posterior sample per sentence, drawn from a generator seeded with `seed`, so repeated
    evaluations agree and evaluation never consumes the training RNG. For the language-model
    baseline (no latent) `nll`/`ppl` are exact and `kl` is 0.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    rec_sum = torch.zeros((), dtype=torch.float64)
    kl_dims = torch.zeros(model.latent_size, dtype=torch.float64)
    for batch in iterate(split, batch_plan(split, batch_size, shuffle=False)):
        batch = batch.to(device)
        out = model(batch.tokens, batch.lengths, generator=generator)
        rec_sum += out.rec.double().sum().cpu()
        kl_dims += out.kl.double().sum(0).cpu()
    model.train(was_training)

    n, tokens = len(split), split.num_tokens
    kl_sum = kl_dims.sum()
    metrics = {
        "rec": float(rec_sum / n),
        "kl": float(kl_sum / n),
        "neg_elbo": float((rec_sum + kl_sum) / n),
        "ppl_elbo": math.exp(float((rec_sum + kl_sum) / tokens)),
        "sentences": n,
        "tokens": tokens,
    }
    if model.has_latent:
        metrics["kl_per_dim"] = (kl_dims / n).tolist()
    else:  # no latent: the decoder's NLL is the exact log-likelihood
        metrics["nll"] = metrics["rec"]
        metrics["ppl"] = math.exp(float(rec_sum / tokens))
    return metrics
