"""Decoders p(x|z): the protocol that training, metrics and generation use, and its LSTM
implementation. Chosen by `model.decoder` from DECODERS.

The protocol (`Decoder`) is all that the rest of vae_text knows of a decoder:
- built as `Cls(vocab_size, cfg, latent_size, pad_id, **model.decoder_args)` (latent_size 0: the
  language model, z is None); its keyword-only __init__ arguments are its options;
- `vocab_size`: the number of logits per position;
- training and scoring: `decoder(inputs, z, mask)` -> logits (N, V) of the N positions where
  `mask` (B, T) is true, in row-major order. inputs (B, T) are <bos> w1 .. w(n) (padded, perhaps
  with word dropout), so position t predicts target t. Only the masked (real) positions need be
  projected onto the vocabulary, which is where the memory goes. Position t must not see inputs
  after t (causality), nor padding, nor other sentences of the batch;
- generation: `start(z, batch_size)` -> a state, `step(tokens, state)` -> (logits (B, V) of the
  next token, new state) after feeding tokens (B,), and `reorder(state, rows)` -> the state of
  rows `rows` (B',) in that order (beam search keeps, drops and duplicates hypotheses). The state
  is opaque: only the decoder that made it looks inside (an LSTM's (h, c) and z; a Transformer's
  per-layer key/value caches, position and memory slots from z).
Stepping through a sentence from `start` gives the same logits as `decoder(inputs, z, mask)`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from vae_text.config import ModelConfig


class Decoder(nn.Module, ABC):
    """The decoder protocol; see the module docstring."""

    vocab_size: int

    @abstractmethod
    def forward(self, inputs: Tensor, z: Tensor | None, mask: Tensor) -> Tensor:
        """Logits (N, V) at the N true positions of `mask` (B, T) for inputs (B, T) given z (B, Z)."""

    @abstractmethod
    def start(self, z: Tensor | None, batch_size: int) -> Any:
        """The generation state before the first token (<bos> is fed by the caller)."""

    @abstractmethod
    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        """Feed tokens (B,); return logits (B, V) for the next token and the new state."""

    @abstractmethod
    def reorder(self, state: Any, rows: Tensor) -> Any:
        """The state of rows `rows` (B',) of the batch, in that order."""


@dataclass
class LSTMState:
    h: Tensor | None  # (layers, B, H); None: the LSTM's zero state
    c: Tensor | None  # (layers, B, H)
    z: Tensor | None  # (B, Z), appended to every input with concat conditioning


class LSTMDecoder(Decoder):
    """Unidirectional LSTM language model, optionally conditioned on z (latent_size > 0): z as its
    initial state (init), appended to every input embedding (concat), or both."""

    def __init__(self, vocab_size: int, cfg: ModelConfig, latent_size: int, pad_id: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.latent_size = latent_size
        self.concat = latent_size > 0 and cfg.conditioning in ("concat", "both")
        self.init = latent_size > 0 and cfg.conditioning in ("init", "both")
        self.layers, self.hidden = cfg.decoder_layers, cfg.decoder_hidden
        self.embed = nn.Embedding(vocab_size, cfg.embed_size, padding_idx=pad_id)
        in_size = cfg.embed_size + (latent_size if self.concat else 0)
        self.lstm = nn.LSTM(in_size, self.hidden, self.layers, batch_first=True)
        self.init_state = nn.Linear(latent_size, 2 * self.layers * self.hidden) if self.init else None
        self.embed_dropout = nn.Dropout(cfg.embed_dropout)
        self.output_dropout = nn.Dropout(cfg.output_dropout)
        self.proj = nn.Linear(self.hidden, vocab_size)

    def initial_state(self, z: Tensor | None) -> tuple[Tensor, Tensor] | None:
        if self.init_state is None:
            return None
        batch = z.shape[0]
        state = self.init_state(z).view(batch, 2, self.layers, self.hidden)
        h0 = torch.tanh(state[:, 0]).transpose(0, 1).contiguous()  # (layers, B, H)
        c0 = state[:, 1].transpose(0, 1).contiguous()
        return h0, c0

    def hidden_states(self, inputs: Tensor, z: Tensor | None,
                      state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple]:
        """LSTM outputs (B, T, H) for input ids (B, T); `state` continues a previous call."""
        x = self.embed_dropout(self.embed(inputs))  # (B, T, E)
        if self.concat:
            x = torch.cat([x, z[:, None, :].expand(-1, x.shape[1], -1)], dim=-1)
        if state is None:
            state = self.initial_state(z)
        return self.lstm(x, state)

    def logits(self, h: Tensor) -> Tensor:
        return self.proj(self.output_dropout(h))

    def forward(self, inputs: Tensor, z: Tensor | None, mask: Tensor) -> Tensor:
        h, _ = self.hidden_states(inputs, z)  # (B, T, H)
        return self.logits(h[mask])  # (N, V): only real tokens reach the projection

    def start(self, z: Tensor | None, batch_size: int) -> LSTMState:
        h_c = self.initial_state(z)
        return LSTMState(*(h_c or (None, None)), z)

    def step(self, tokens: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        h_c = None if state.h is None else (state.h, state.c)
        h, (h_n, c_n) = self.hidden_states(tokens[:, None], state.z, h_c)  # (B, 1, H)
        return self.logits(h[:, -1]), LSTMState(h_n, c_n, state.z)

    def reorder(self, state: LSTMState, rows: Tensor) -> LSTMState:
        pick = lambda t, dim: None if t is None else t.index_select(dim, rows)  # noqa: E731
        return LSTMState(pick(state.h, 1), pick(state.c, 1), pick(state.z, 0))


DECODERS: dict[str, type[Decoder]] = {"lstm": LSTMDecoder}
