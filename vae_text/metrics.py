"""Evaluation metrics as functions of a model and a split (defined in docs/protocol.md).

NLLs are nats per sentence (sum over its words and one <eos>), averaged over sentences; PPL divides
the total NLL by the total number of tokens (words + one <eos> per sentence). The ELBO is always
computed with beta = 1, whatever weight the KL had in training, and its PPL is named `ppl_elbo`:
it bounds the true perplexity from above. `nll_iw` / `ppl_iw` are the importance-weighted bound
(Burda et al. 2016) with `iw_samples` samples; for the language model `nll` / `ppl` are exact.

Randomness: the noise of a sentence's posterior samples is seeded from (seed, its token ids), so
every metric is the same whatever the batch size, padding or order of the sentences.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from vae_text.batches import Batch, Split, batch_plan, iterate
from vae_text.config import EvalConfig
from vae_text.distributed import Dist
from vae_text.evalprogress import IWProgress, fingerprint, progress_file
from vae_text.generate import greedy_decode
from vae_text.latent import Posterior, kl_term
from vae_text.model import TextVAE
from vae_text.tokenizer import Tokenizer
from vae_text.utils import write_json

MI_ESTIMATOR = "aggregate posterior over the whole evaluation set (Li et al. 2019 / Optimus)"


# --- noise that belongs to a sentence, not to a batch -------------------------------------------


def sentence_noise(tokens: Tensor, lengths: Tensor, samples: int, latent: int, seed: int,
                   salt: str = "") -> Tensor:
    """Standard-normal noise (B, samples, latent), each row seeded from its sentence's ids
    (`latent`: the posterior's noise_size)."""
    rows = []
    for ids, n in zip(tokens.tolist(), lengths.tolist()):
        key = hashlib.blake2b(f"{seed}{salt}:{ids[:n]}".encode(), digest_size=8).digest()
        g = torch.Generator().manual_seed(int.from_bytes(key, "little") & (2**63 - 1))
        rows.append(torch.randn(samples, latent, generator=g, device="cpu"))  # the generator's
    return torch.stack(rows).to(tokens.device)


# --- the pieces ---------------------------------------------------------------------------------


@torch.no_grad()
def batch_elbo(model: TextVAE, batch: Batch, seed: int) -> tuple[Tensor, Tensor, Posterior | None]:
    """rec (B,), KL (B, Z) per dimension (or (B, 1), see `latent.kl_term`) and q(z|x) for one
    batch; one posterior sample per sentence (z = its mean for a model trained without sampling)."""
    if not model.has_latent:
        rec = model.reconstruction(batch.tokens, None)
        return rec, rec.new_zeros(len(batch), 0), None
    q = model.encode(batch.tokens, batch.lengths)
    if model.use_mean:
        z = q.mean
    else:
        z = q.rsample(eps=sentence_noise(batch.tokens, batch.lengths, 1, q.noise_size, seed, "elbo")[:, 0])
    rec = model.reconstruction(batch.tokens, z)
    return rec, kl_term(q, model.prior, z), q


@torch.no_grad()
def iw_log_likelihood(model: TextVAE, batch: Batch, samples: int, seed: int,
                      memory_mb: float = 64) -> Tensor:
    """Importance-weighted estimate of log p(x) per sentence (B,), float64.

    log p(x) ~ logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K, z_k ~ q(z|x).
    The encoder runs once; all (sentence, sample) pairs go through the decoder in chunks whose
    logits fit in `memory_mb`.
    """
    q = model.encode(batch.tokens, batch.lengths)
    eps = sentence_noise(batch.tokens, batch.lengths, samples, q.noise_size, seed, "iw")  # (B, K, .)
    z = q.rsample(eps=eps.transpose(0, 1))  # (K, B, Z)
    log_prior = model.prior.log_prob(z).T  # (B, K)
    log_q = q.log_prob(z).T  # (B, K)

    B, T = batch.tokens.shape
    vocab = model.decoder.vocab_size
    rows_per_chunk = max(1, int(memory_mb * 2**20 / (3 * 4 * vocab * T)))  # logits + softmax work
    flat_z = z.transpose(0, 1).reshape(B * samples, -1)  # sentence-major: row b * K + k
    device = batch.tokens.device
    sentence = torch.arange(B, device=device).repeat_interleave(samples)
    log_px_z = torch.empty(B * samples, device=device)
    for start in range(0, B * samples, rows_per_chunk):
        rows = slice(start, start + rows_per_chunk)
        log_px_z[rows] = -model.reconstruction(batch.tokens[sentence[rows]], flat_z[rows])
    log_w = log_px_z.view(B, samples).double() + log_prior.double() - log_q.double()
    return torch.logsumexp(log_w, dim=1) - math.log(samples)


def mutual_information(q: Posterior, z: Tensor, chunk: int = 512) -> float:
    """I(x; z) under q(x, z) = p_data(x) q(z|x), with the aggregate posterior taken over the
    whole set: E_x E_q(z|x)[log q(z|x)] - E_x E_q(z|x)[log (1/N) sum_j q(z|x_j)].

    q: the posteriors of the N sentences (one object, e.g. `Posterior.cat` of the batches);
    z: (N, Z), one sample from each. The first term is -entropy when q has it in closed form,
    else log q(z|x) at the sample. The estimate is capped near log N.
    """
    q, z = q.map(torch.Tensor.double), z.double()
    n = len(q)
    entropy = q.entropy()
    neg_entropy = (-entropy).mean() if entropy is not None else q.log_prob(z).mean()
    log_qz = torch.empty(n, dtype=torch.float64, device=z.device)
    for start in range(0, n, chunk):
        zi = z[start: start + chunk, None]  # (c, 1, Z) against every posterior (N,) -> (c, N)
        log_qz[start: start + chunk] = torch.logsumexp(q.log_prob(zi), dim=1) - math.log(n)
    return float(neg_entropy - log_qz.mean())


def active_units(mu: Tensor, threshold: float = 0.01) -> tuple[int, list[float]]:
    """Number of dimensions u with Var_x(E_q(z|x)[z_u]) >= threshold, and those variances."""
    variances = mu.double().var(dim=0, unbiased=True) if mu.shape[0] > 1 else mu.new_zeros(mu.shape[1])
    return int((variances >= threshold).sum()), variances.tolist()


# --- the suite ----------------------------------------------------------------------------------


def _exp(x: float) -> float:
    """exp, with infinity (written as null in JSON) where a diverged model's NLL overflows it."""
    return math.inf if x >= 709.0 else math.exp(x)


@torch.no_grad()
def evaluate(model: TextVAE, split: Split, tokenizer: Tokenizer | None = None,
             cfg: EvalConfig | None = None, full: bool = True, dist: Dist | None = None,
             progress: Path | None = None) -> dict:
    """All metrics of docs/protocol.md over a whole split.

    `full=False` is the cheap per-epoch validation: ELBO terms, PPL, MI and AU (one encoder pass),
    plus the IW-NLL only if `cfg.iw_samples > 0`. `full=True` adds token accuracy and greedy
    reconstructions (exact match, BLEU) when `tokenizer` is given.

    With `dist` (several processes), each rank evaluates every world-th batch and the sums and
    per-sentence posteriors are gathered, so every rank returns the 1-process numbers.

    `progress`: a file that keeps the IW-NLL estimates made so far (vae_text.evalprogress:
    `progress_file`), so an interrupted evaluation resumes with the same numbers; the caller
    removes it once the results are written.
    """
    dist = dist or Dist()
    cfg = cfg or EvalConfig()
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    plan = batch_plan(split, cfg.batch_size, shuffle=False)[dist.rank::dist.world]
    # a deterministic code (z = mu: the autoencoder) has no likelihood to bound: no IW-NLL
    do_iw = model.has_latent and not model.use_mean and cfg.iw_samples > 0
    do_recon = full and model.has_latent and cfg.reconstruct and tokenizer is not None
    done = None
    if do_iw and progress is not None:
        done = IWProgress(progress, fingerprint(model, split, {
            "iw_samples": cfg.iw_samples, "seed": cfg.seed, "batch_size": cfg.batch_size,
            "memory_mb": cfg.memory_mb, "device": str(device), "rank": dist.rank, "world": dist.world}))

    rec_sum = torch.zeros((), dtype=torch.float64)
    iw_sum = torch.zeros((), dtype=torch.float64)
    kl_dims = torch.zeros((), dtype=torch.float64)  # becomes (Z,) or (1,): see latent.kl_term
    posteriors, zs, order = [], [], []  # order: each posterior's position in the split
    correct = 0
    hyps, refs = [], []
    bar = tqdm(total=sum(int(split.lengths[i].sum()) for i in plan), unit="tok",
               disable=not (cfg.progress and do_iw and dist.main),
               desc=f"IW-NLL K={cfg.iw_samples}", dynamic_ncols=True, leave=False)
    for batch in iterate(split, plan):
        batch = batch.to(device)
        rec, kl, q = batch_elbo(model, batch, cfg.seed)
        rec_sum += rec.double().sum().cpu()
        kl_dims = kl_dims + kl.double().sum(0).cpu()
        if model.has_latent:
            eps = sentence_noise(batch.tokens, batch.lengths, 1, q.noise_size, cfg.seed, "mi")[:, 0]
            posteriors.append(q.to("cpu"))
            zs.append(q.rsample(eps=eps).cpu())
            order.append(batch.index.cpu())
        if do_iw:
            iw = done.lookup(batch.index) if done is not None else None
            if iw is None:
                iw = iw_log_likelihood(model, batch, cfg.iw_samples, cfg.seed, cfg.memory_mb)
                if done is not None:
                    done.add(batch.index, iw)
            iw_sum -= iw.sum().cpu()
        if do_recon:
            correct += token_hits(model, batch, q.mean)
            lengths = batch.lengths.tolist()
            for row, ids in enumerate(greedy_decode(model, q.mean, max_len=max(lengths) * 2 + 10)):
                ids = ids[: lengths[row] * 2 + 10]  # each sentence's own cap, whatever its batch
                hyps.append(" ".join(tokenizer.decode(ids)))
                refs.append(" ".join(tokenizer.decode(batch.tokens[row, : lengths[row]].tolist())))
        bar.update(batch.num_tokens)
    bar.close()
    model.train(was_training)
    if dist.active:  # every rank's share, in rank order: sums add, sentences concatenate
        parts = dist.gather((rec_sum, iw_sum, kl_dims, posteriors, zs, correct, hyps, refs, order))
        rec_sum, iw_sum, kl_dims = (sum(p[k] for p in parts) for k in range(3))
        posteriors, zs, order = ([t for p in parts for t in p[k]] for k in (3, 4, 8))
        correct = sum(p[5] for p in parts)
        hyps, refs = ([h for p in parts for h in p[k]] for k in (6, 7))

    n, tokens = len(split), split.num_words  # PPL is per word (+ <eos>) whatever the tokenizer
    kl_sum = kl_dims.sum()
    out = {
        "rec": float(rec_sum / n),
        "kl": float(kl_sum / n),
        "neg_elbo": float((rec_sum + kl_sum) / n),
        "ppl_elbo": _exp(float((rec_sum + kl_sum) / tokens)),
    }
    if not model.has_latent:  # no latent: the decoder's NLL is the exact log-likelihood
        out.update(nll=out["rec"], ppl=_exp(float(rec_sum / tokens)), nll_estimator="exact")
    else:
        q_all = type(posteriors[0]).cat(posteriors)
        au, variances = active_units(q_all.mean, cfg.au_threshold)
        if kl_dims.numel() == model.latent_size:  # the KL has a closed form per dimension
            out["kl_per_dim"] = (kl_dims / n).tolist()
        q_mi, z_mi = q_all, torch.cat(zs)
        if cfg.mi_max_sentences is not None and n > cfg.mi_max_sentences:
            # a seeded subset of the split's sentences, whatever the batches and ranks
            g = torch.Generator().manual_seed(cfg.seed)
            chosen = torch.randperm(n, generator=g)[: cfg.mi_max_sentences].sort().values
            row_of = torch.empty(n, dtype=torch.long)
            row_of[torch.cat(order)] = torch.arange(n)  # split position -> row of q_all
            q_mi, z_mi = q_all.index(row_of[chosen]), z_mi[row_of[chosen]]
        out.update(mi=mutual_information(q_mi, z_mi), mi_sentences=len(z_mi),
                   mi_estimator=MI_ESTIMATOR, au=au, au_threshold=cfg.au_threshold,
                   au_variances=variances)
        if do_iw:
            out.update(nll_iw=float(iw_sum / n), ppl_iw=_exp(float(iw_sum / tokens)),
                       iw_samples=cfg.iw_samples)
        if do_recon:
            import sacrebleu

            out.update(token_accuracy=correct / split.num_tokens,
                       recon_exact=sum(h == r for h, r in zip(hyps, refs)) / n,
                       recon_bleu=sacrebleu.corpus_bleu(hyps, [refs]).score)
    out.update(sentences=n, tokens=tokens, model_tokens=split.num_tokens,
               seconds=time.perf_counter() - started)
    return out


def evaluate_to(out: Path, model: TextVAE, split: Split, tokenizer: Tokenizer | None = None,
                cfg: EvalConfig | None = None, dist: Dist | None = None) -> dict:
    """`evaluate`, its results written to `out` (JSON, by rank 0), resumably: the IW-NLL estimates
    are kept in `progress_file(out)` until the results are written."""
    dist = dist or Dist()
    progress = progress_file(out, dist.rank, dist.world)
    metrics = evaluate(model, split, tokenizer, cfg, dist=dist, progress=progress)
    if dist.main:
        write_json(out, metrics)
    progress.unlink(missing_ok=True)
    return metrics


@torch.no_grad()
def token_hits(model: TextVAE, batch: Batch, z: Tensor) -> int:
    """Teacher-forced tokens whose argmax prediction given z is the target."""
    from vae_text.model import decoder_inputs

    inputs = decoder_inputs(batch.tokens, model.bos_id, model.eos_id, model.pad_id)
    mask = batch.tokens != model.pad_id
    return int((model.decoder(inputs, z, mask).argmax(-1) == batch.tokens[mask]).sum())
