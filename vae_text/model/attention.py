"""The pieces the Transformer encoder and decoder share: token and position embeddings, and a
pre-LayerNorm block (Vaswani et al. 2017; the pre-LN placement of Xiong et al. 2020, as GPT-2)
whose self-attention can continue from cached keys and values.

A block is written once for both uses: the encoder attends both ways under a key-padding mask,
the decoder causally, and for generation a block takes the keys/values of earlier positions (and
of the memory slots made from z) instead of recomputing them.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_text.core.errors import ConfigError, VaeTextError
from vae_text.core.options import Range

# The declarations of the options both Transformer parts take (vae_text.core.options).
PositionKind = Literal["learned", "sinusoidal"]  # learned (up to max_len) or sinusoidal (any length)
Dropout = Annotated[float, Range(ge=0, lt=1)]


def check_heads(part: str, d_model: int, heads: int) -> None:
    """A one-line ConfigError unless `heads` divides the width (`part`: decoder, encoder)."""
    if d_model % heads:
        raise ConfigError(f"model.{part}_args.heads={heads!r} is invalid: a positive divisor of the "
                          f"model width {d_model} (model.{part}_hidden)")


class ScaledEmbedding(nn.Embedding):
    """nn.Embedding drawn from N(0, 1/d) instead of N(0, 1): vectors of norm about 1, so that tied
    output logits start near 0. Its own reset_parameters, so a re-initialisation keeps the rule."""

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=self.embedding_dim ** -0.5)
        self._fill_padding_idx_with_zero()


def sinusoid(positions: Tensor, width: int) -> Tensor:
    """Vaswani et al.'s encodings (T, width) of integer `positions` (T,): sin on even, cos on odd."""
    freq = torch.exp(torch.arange(0, width, 2, device=positions.device, dtype=torch.float)
                     * (-math.log(10000.0) / width))  # (ceil(width/2),)
    angle = positions.float()[:, None] * freq  # (T, ceil(width/2))
    out = torch.zeros(len(positions), width, device=positions.device)
    out[:, 0::2] = angle.sin()
    out[:, 1::2] = angle.cos()[:, : width // 2]
    return out


class Positions(nn.Module):
    """Position vectors (T, width) for positions offset .. offset+T-1: learned (up to max_len
    positions, then an error naming the option) or sinusoidal (any length, no weights)."""

    def __init__(self, kind: str, width: int, max_len: int, key: str):
        super().__init__()
        self.kind, self.width, self.max_len, self.key = kind, width, max_len, key
        self.table = ScaledEmbedding(max_len, width) if kind == "learned" else None

    def forward(self, length: int, offset: int = 0, device: torch.device | None = None) -> Tensor:
        positions = torch.arange(offset, offset + length, device=device)
        if self.table is None:
            return sinusoid(positions, self.width)
        if offset + length > self.max_len:
            raise VaeTextError(f"a sentence of {offset + length} tokens is longer than the "
                               f"{self.max_len} learned positions: raise {self.key}.max_len")
        return self.table(positions)


class SelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values may be preceded by cached ones (B, H, S, dh)."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        # No bias: a key bias shifts all of a query's scores alike (softmax ignores it) and a value
        # bias passes through the weights (they sum to 1) into the output's bias, so their true
        # gradients are 0, and Adam would turn rounding noise into full-size steps on them (the
        # query bias goes with them, as in PaLM and LLaMA: one fused projection).
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.out = nn.Linear(width, width)

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values (B, H, T, dh) of inputs x (B, T, D): what a memory slot contributes."""
        _, k, v = self._split(x)
        return k, v

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, width // self.heads).unbind(2)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # each (B, H, T, dh)

    def forward(self, x: Tensor, mask: Tensor | None, past: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Attend from x (B, T, D) to past + x; `mask` (B or 1, 1, T, S + T) bool, True = may
        attend (None: everything). Returns (B, T, D) and the keys/values (B, H, S + T, dh)."""
        q, k, v = self._split(x)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        batch, _, length, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(batch, length, -1)), (k, v)


class Block(nn.Module):
    """x + attn(LN(x)), then x + MLP(LN(x)): the residual stream is never normalised, which is
    what lets a pre-LN Transformer train from scratch without a learning-rate warm-up."""

    def __init__(self, width: int, heads: int, ffn_size: int, dropout: float):
        super().__init__()
        self.ln_attn = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads, dropout)
        self.ln_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, ffn_size), nn.GELU(), nn.Linear(ffn_size, width))
        self.drop = nn.Dropout(dropout)

    def memory(self, slots: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values (B, H, M, dh) of memory slots (B, M, D), normalised as a token's input."""
        return self.attn.keys_values(self.ln_attn(slots))

    def forward(self, x: Tensor, mask: Tensor | None, past: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        a, kv = self.attn(self.ln_attn(x), mask, past)
        x = x + self.drop(a)
        return x + self.drop(self.mlp(self.ln_mlp(x))), kv
