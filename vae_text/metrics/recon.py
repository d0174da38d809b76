"""Reconstruction from z = the posterior mean: teacher-forced token accuracy, and greedy decodes
scored by exact match and corpus BLEU (sacrebleu) against their sentences."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vae_text.data.batches import Batch
from vae_text.metrics.base import BatchResult, Metric, Row, register
from vae_text.model.decoding import greedy_decode
from vae_text.model.textvae import TextVAE, decoder_inputs


@torch.no_grad()
def token_hits(model: TextVAE, batch: Batch, z: Tensor) -> int:
    """Teacher-forced tokens whose argmax prediction given z is the target."""
    inputs = decoder_inputs(batch.tokens, model.bos_id, model.eos_id, model.pad_id)
    mask = batch.tokens != model.pad_id
    return int((model.decoder(inputs, z, mask).argmax(-1) == batch.tokens[mask]).sum())


@register
class Reconstruction(Metric):
    """token_accuracy, recon_exact, recon_bleu; in the full suite only (not the per-epoch
    validation), and only with a tokenizer to write the sentences (`eval.reconstruct`)."""

    name = "reconstruction"
    rows = (Row("token_accuracy", "token accuracy (z=mu)", ".4f"),
            Row("recon_exact", "exact reconstructions", ".4f"),
            Row("recon_bleu", "reconstruction BLEU", ".2f"))

    @classmethod
    def applies(cls, ctx) -> bool:
        return ctx.full and ctx.model.has_latent and ctx.cfg.reconstruct and ctx.tokenizer is not None

    def __init__(self, ctx):
        super().__init__(ctx)
        self.correct, self.hyps, self.refs = 0, [], []

    def update(self, result: BatchResult) -> None:
        model, batch, tokenizer = self.ctx.model, result.batch, self.ctx.tokenizer
        self.correct += token_hits(model, batch, result.mean)
        lengths = batch.lengths.tolist()
        for row, ids in enumerate(greedy_decode(model, result.mean, max_len=max(lengths) * 2 + 10)):
            ids = ids[: lengths[row] * 2 + 10]  # each sentence's own cap, whatever its batch
            self.hyps.append(" ".join(tokenizer.decode(ids)))
            self.refs.append(" ".join(tokenizer.decode(batch.tokens[row, : lengths[row]].tolist())))

    def state(self) -> dict[str, Any]:
        return {"correct": self.correct, "hyps": self.hyps, "refs": self.refs}

    def finish(self, state: dict[str, Any]) -> dict[str, Any]:
        import sacrebleu  # a second's import: only where reconstructions are scored

        hyps, refs = state["hyps"], state["refs"]
        return {"token_accuracy": state["correct"] / self.ctx.split.num_tokens,
                "recon_exact": sum(h == r for h, r in zip(hyps, refs)) / len(self.ctx.split),
                "recon_bleu": sacrebleu.corpus_bleu(hyps, [refs]).score}
