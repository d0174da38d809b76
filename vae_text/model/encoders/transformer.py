"""A bidirectional pre-LayerNorm Transformer sentence encoder: `model.encoder=transformer`
(conf/model/encoder/transformer.yaml), next to the LSTM in ENCODERS; any encoder works with any
decoder.

Sizes: the width is model.encoder_hidden (its token embeddings too, and the VampPrior's
pseudo-inputs: model.embed_size is the decoder's), model.encoder_layers blocks whose MLPs are
`ffn_size` wide (null: 4 x the width); model.bidirectional does not apply (attention sees the
whole sentence). Padding is masked out of every attention and of the pooling, so a sentence's
features do not depend on its batch. Pooling (`pool`):
- "mean": the mean of the last block's outputs over the sentence's tokens;
- "first": the output at a learned first position put before the sentence (BERT's [CLS]), which
  attends to every token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from vae_text.core.options import PositiveInt
from vae_text.model.attention import (
    Block,
    Dropout,
    PositionKind,
    Positions,
    ScaledEmbedding,
    check_heads,
)
from vae_text.model.encoders.base import ENCODERS, Encoder

if TYPE_CHECKING:
    from vae_text.config import ModelConfig

class TransformerEncoder(Encoder):
    """Token + position embeddings -> pre-LN blocks (attending both ways) -> LN -> pooling."""

    def __init__(self, vocab_size: int, cfg: ModelConfig, pad_id: int, *, heads: PositiveInt = 4,
                 pool: Literal["mean", "first"] = "mean", positions: PositionKind = "learned",
                 max_len: PositiveInt = 512, ffn_size: PositiveInt | None = None,
                 dropout: Dropout = 0.0):
        super().__init__()
        width = cfg.encoder_hidden
        check_heads("encoder", width, heads)
        ffn = 4 * width if ffn_size is None else ffn_size
        self.pool, self.out_size, self.embed_size = pool, width, width
        self.embed = ScaledEmbedding(vocab_size, width, padding_idx=pad_id)
        self.positions = Positions(positions, width, max_len + (pool == "first"), "model.encoder_args")
        self.first = ScaledEmbedding(1, width) if pool == "first" else None
        self.blocks = nn.ModuleList(Block(width, heads, ffn, dropout)
                                    for _ in range(cfg.encoder_layers))
        self.ln_out = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.encode_embedded(self.embed(tokens), lengths)

    def encode_embedded(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Features (B, D) of input vectors x (B, T, D) of `lengths` (B,), read in place of the
        token embeddings; positions are added here."""
        real = torch.arange(x.shape[1], device=x.device)[None] < lengths.to(x.device)[:, None]
        if self.first is not None:  # the learned first position, always real
            x = torch.cat([self.first.weight.expand(len(x), 1, -1), x], dim=1)
            real = torch.cat([real.new_ones(len(x), 1), real], dim=1)
        x = self.drop(x + self.positions(x.shape[1], 0, x.device))
        mask = real[:, None, None, :]  # (B, 1, 1, T): every query sees the real keys alone
        for block in self.blocks:
            x, _ = block(x, mask)
        x = self.ln_out(x)
        if self.first is not None:
            return x[:, 0]
        weights = real.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        return (x * weights).sum(1) / weights.sum(1)  # (B, D)


ENCODERS["transformer"] = TransformerEncoder
