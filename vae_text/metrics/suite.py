"""The evaluation suite: one encoder pass per batch, handed to every selected metric
(`eval.metrics`, vae_text.metrics.base), their states merged over processes by name.
Definitions: docs/protocol.md."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm import tqdm

from vae_text.config import EvalConfig
from vae_text.core.distributed import Dist
from vae_text.core.utils import write_json
from vae_text.data.batches import Split, batch_plan, iterate
from vae_text.data.tokenizer import Tokenizer
from vae_text.metrics.base import BatchResult, EvalContext, reduce_states, select
from vae_text.metrics.elbo import batch_elbo
from vae_text.metrics.iw import IWNLL
from vae_text.metrics.progress import progress_file
from vae_text.model.textvae import TextVAE


@torch.no_grad()
def evaluate(model: TextVAE, split: Split, tokenizer: Tokenizer | None = None,
             cfg: EvalConfig | None = None, full: bool = True, dist: Dist | None = None,
             progress: Path | None = None) -> dict:
    """The metrics `cfg.metrics` names over a whole split, each where it applies.

    `full=False` is the cheap per-epoch validation: the default set then runs the ELBO terms,
    PPL, MI and AU (one encoder pass), plus the IW-NLL only if `cfg.iw_samples > 0`. `full=True`
    adds token accuracy and greedy reconstructions (exact match, BLEU) when `tokenizer` is given.

    With `dist` (several processes), each rank evaluates every world-th batch and the metrics'
    states are gathered, so every rank returns the 1-process numbers.

    `progress`: a file that keeps the IW-NLL estimates made so far (vae_text.metrics.progress:
    `progress_file`), so an interrupted evaluation resumes with the same numbers; the caller
    removes it once the results are written.
    """
    dist = dist or Dist()
    cfg = cfg or EvalConfig()
    classes = select(cfg)
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ctx = EvalContext(model, split, cfg, tokenizer, full, dist, progress, device)
    metrics = [cls(ctx) for cls in classes if cls.applies(ctx)]
    plan = batch_plan(split, cfg.batch_size, shuffle=False)[dist.rank::dist.world]
    slow = [m.progress for m in metrics if m.progress]
    bar = tqdm(total=sum(int(split.lengths[i].sum()) for i in plan), unit="tok",
               disable=not (cfg.progress and slow and dist.main), desc=", ".join(slow),
               dynamic_ncols=True, leave=False)
    for batch in iterate(split, plan):
        batch = batch.to(device)
        result = BatchResult(batch, *batch_elbo(model, batch, cfg.seed))
        for metric in metrics:
            metric.update(result)
        bar.update(batch.num_tokens)
    bar.close()
    model.train(was_training)
    states = dist.gather({m.name: m.state() for m in metrics})  # every rank's, in rank order
    out = {}
    for metric in metrics:
        out.update(metric.finish(reduce_states([s[metric.name] for s in states])))
    out.update(sentences=len(split), tokens=split.num_words, model_tokens=split.num_tokens,
               seconds=time.perf_counter() - started)
    for metric in metrics:
        if isinstance(metric, IWNLL):  # how well its decoder pass filled the device
            out.update(metric.readout_figures())
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
