"""A causal pre-LayerNorm Transformer decoder p(x|z), trained from scratch: `model.decoder=transformer`
(conf/model/decoder/transformer.yaml). It follows the decoder protocol of vae_text.model.decoders.

z enters in one or both of the two ways of Optimus (Li et al. 2020), by `inject`:
- "memory": z is projected to `memory_slots` vectors per layer, which every position of that
  layer's self-attention may attend to, as a prefix that is never masked (their keys/values are
  the first entries of the key/value cache);
- "embedding": z is projected to one vector added to every input embedding;
- "both". With no latent (model.kind=lm) z is None and neither is made.

Sizes: the model width d_model is model.decoder_hidden (token embeddings are d_model wide, so
model.embed_size is the encoder's alone), model.decoder_layers blocks whose MLPs are `ffn_size`
wide (null: 4 d_model), model.embed_dropout on the input embeddings and model.output_dropout
before the vocabulary projection, as for the LSTM.

Padding: inputs are padded on the right only (model.decoder_inputs), so a causal position never
sees padding, and every operation is per sentence: a sentence's scores do not depend on its
batch, with no padding mask. Generation keeps per-layer keys/values: each step feeds the new token
alone through the network and attends to the cache, instead of re-running the prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
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
from vae_text.model.decoders.base import DECODERS, Decoder

if TYPE_CHECKING:
    from vae_text.config import ModelConfig


@dataclass
class TransformerState:
    keys: list[Tensor]  # per layer (B, H, M + t, dh): memory slots, then the t tokens fed so far
    values: list[Tensor]
    position: int  # tokens fed so far: the next token's position
    z_embed: Tensor | None  # (B, 1, D) added to every input embedding (inject embedding/both)


class Readout(nn.Module):
    """The vocabulary projection, with its own weight or the token embeddings' (tied): the tied
    weight is stored once, so state_dict and safetensors exports hold no shared tensors."""

    def __init__(self, width: int, vocab_size: int, tied: nn.Embedding | None):
        super().__init__()
        self.tied = [tied]  # a list: not a submodule, its weight stays the embedding's entry
        self.weight = None if tied is not None else nn.Parameter(torch.empty(vocab_size, width))
        self.bias = nn.Parameter(torch.empty(vocab_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.normal_(self.weight, std=self.weight.shape[1] ** -0.5)
        nn.init.zeros_(self.bias)

    def forward(self, h: Tensor) -> Tensor:
        weight = self.tied[0].weight if self.weight is None else self.weight
        return F.linear(h, weight, self.bias)


class TransformerDecoder(Decoder):
    """Causal pre-LN Transformer language model, optionally conditioned on z; see the module doc."""

    def __init__(self, vocab_size: int, cfg: ModelConfig, latent_size: int, pad_id: int, *,
                 heads: PositiveInt = 4, inject: Literal["memory", "embedding", "both"] = "both",
                 memory_slots: PositiveInt = 1, positions: PositionKind = "learned",
                 max_len: PositiveInt = 512, ffn_size: PositiveInt | None = None,
                 dropout: Dropout = 0.0, tie_embeddings: bool = False):
        super().__init__()
        width = cfg.decoder_hidden
        check_heads("decoder", width, heads)
        ffn = 4 * width if ffn_size is None else ffn_size
        self.vocab_size, self.latent_size, self.width = vocab_size, latent_size, width
        self.layers, self.slots = cfg.decoder_layers, memory_slots
        self.embed = ScaledEmbedding(vocab_size, width, padding_idx=pad_id)
        self.positions = Positions(positions, width, max_len, "model.decoder_args")
        self.blocks = nn.ModuleList(Block(width, heads, ffn, dropout)
                                    for _ in range(self.layers))
        self.ln_out = nn.LayerNorm(width)
        self.readout = Readout(width, vocab_size, self.embed if tie_embeddings else None)
        use_memory = latent_size > 0 and inject in ("memory", "both")
        use_embedding = latent_size > 0 and inject in ("embedding", "both")
        self.to_memory = nn.Linear(latent_size, self.layers * memory_slots * width) if use_memory else None
        self.to_embedding = nn.Linear(latent_size, width) if use_embedding else None
        self.embed_dropout = nn.Dropout(cfg.embed_dropout)
        self.output_dropout = nn.Dropout(cfg.output_dropout)

    def _inputs(self, tokens: Tensor, offset: int, z_embed: Tensor | None) -> Tensor:
        """Input vectors (B, T, D): token + position (+ z's embedding)."""
        x = self.embed(tokens) + self.positions(tokens.shape[1], offset, tokens.device)
        if z_embed is not None:
            x = x + z_embed
        return self.embed_dropout(x)

    def _z_embed(self, z: Tensor | None) -> Tensor | None:
        return None if self.to_embedding is None else self.to_embedding(z)[:, None, :]  # (B, 1, D)

    def _memory(self, z: Tensor | None, batch: int, like: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Each layer's memory keys/values (B, H, M, dh); zero-length without memory."""
        if self.to_memory is None:
            empty = like.new_zeros(batch, self.blocks[0].attn.heads, 0, self.width // self.blocks[0].attn.heads)
            return [(empty, empty)] * self.layers
        slots = self.to_memory(z).view(batch, self.layers, self.slots, self.width)
        return [block.memory(slots[:, i]) for i, block in enumerate(self.blocks)]

    def _logits(self, h: Tensor) -> Tensor:
        return self.readout(self.output_dropout(self.ln_out(h)))

    def hidden_states(self, inputs: Tensor, z: Tensor | None) -> Tensor:
        """Outputs (B, T, D) of the last block for inputs (B, T), every position causally."""
        batch, length = inputs.shape
        x = self._inputs(inputs, 0, self._z_embed(z))
        memory = self._memory(z, batch, x)
        slots = memory[0][0].shape[2]
        # query t sees the memory slots and tokens 0..t: (1, 1, T, M + T), True = may attend
        causal = torch.ones(length, length, dtype=torch.bool, device=inputs.device).tril()
        mask = torch.cat([causal.new_ones(length, slots), causal], dim=1)[None, None]
        for block, past in zip(self.blocks, memory):
            x, _ = block(x, mask, past)
        return x

    def forward(self, inputs: Tensor, z: Tensor | None, mask: Tensor) -> Tensor:
        return self._logits(self.hidden_states(inputs, z)[mask])  # (N, V): real tokens only

    def start(self, z: Tensor | None, batch_size: int) -> TransformerState:
        like = self.readout.bias
        memory = self._memory(z, batch_size, like)
        return TransformerState([k for k, _ in memory], [v for _, v in memory], 0, self._z_embed(z))

    def step(self, tokens: Tensor, state: TransformerState) -> tuple[Tensor, TransformerState]:
        x = self._inputs(tokens[:, None], state.position, state.z_embed)  # (B, 1, D)
        keys, values = [], []
        for block, k, v in zip(self.blocks, state.keys, state.values):
            x, (k, v) = block(x, None, (k, v))  # one query: every cached position is visible
            keys.append(k)
            values.append(v)
        logits = self._logits(x[:, 0])  # (B, V)
        return logits, TransformerState(keys, values, state.position + 1, state.z_embed)

    def reorder(self, state: TransformerState, rows: Tensor) -> TransformerState:
        pick = lambda t: t.index_select(0, rows)  # noqa: E731
        return TransformerState([pick(k) for k in state.keys], [pick(v) for v in state.values],
                                state.position, None if state.z_embed is None else pick(state.z_embed))


DECODERS["transformer"] = TransformerDecoder
