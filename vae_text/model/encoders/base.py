"""Sentence encoders: token ids -> one feature vector per sentence, which a posterior head maps to
q(z|x) (vae_text.model.latent). Chosen by `model.encoder` from ENCODERS.

The protocol (`Encoder`): built as `Cls(vocab_size, cfg, pad_id, **model.encoder_args)`, it has
`out_size` and maps tokens (B, T) padded with pad_id, and their lengths (B,), to features
(B, out_size) that do not depend on the padding or on the other sentences of the batch. Its
keyword-only __init__ arguments are its options.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

if TYPE_CHECKING:
    from vae_text.config import ModelConfig


class Encoder(nn.Module, ABC):
    """What the model needs of an encoder: `out_size` and forward(tokens, lengths) -> (B, out_size).
    Optional, for a prior with pseudo-inputs (VampPrior): `embed_size` and `encode_embedded`."""

    out_size: int
    embed_size: int  # the width of the input vectors `encode_embedded` reads

    @abstractmethod
    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Features (B, out_size) of sentences `tokens` (B, T) of `lengths` (B,)."""

    def encode_embedded(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """Features (B, out_size) of input vectors (B, T, embed_size) read in place of the word
        embeddings (the VampPrior's learned pseudo-inputs)."""
        raise NotImplementedError(f"{type(self).__name__} cannot read embedded inputs")


class LSTMEncoder(Encoder):
    """Embedding + LSTM; returns the last layer's final hidden state (both directions).

    Padding is on the right, so a unidirectional LSTM run over the padded batch has reached each
    sentence's final state at its last real token, before any padding: that output is read and the
    rest ignored (faster than packing the batch). The backward direction of a bidirectional LSTM
    would start in the padding, so it packs the batch instead.
    """

    def __init__(self, vocab_size: int, cfg: ModelConfig, pad_id: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.embed_size, padding_idx=pad_id)
        self.lstm = nn.LSTM(cfg.embed_size, cfg.encoder_hidden, cfg.encoder_layers,
                            batch_first=True, bidirectional=cfg.bidirectional)
        self.directions = 2 if cfg.bidirectional else 1
        self.out_size = cfg.encoder_hidden * self.directions
        self.embed_size = cfg.embed_size

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.encode_embedded(self.embed(tokens), lengths)

    def encode_embedded(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """Features (B, out_size) of embedded sentences `inputs` (B, T, E) of `lengths`."""
        if self.directions == 1:  # padding is on the right: read each sentence's last real token
            out, _ = self.lstm(inputs)  # (B, T, H): the last layer at every position
            last = (lengths - 1).to(out.device)  # (B,)
            return out[torch.arange(out.shape[0], device=out.device), last]  # (B, H)
        packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        _, (h, _) = self.lstm(packed)  # h: (layers * directions, B, H), layer-major
        batch, hidden = h.shape[1], h.shape[2]
        last = h.view(self.lstm.num_layers, self.directions, batch, hidden)[-1]  # (dirs, B, H)
        return last.transpose(0, 1).reshape(batch, self.out_size)  # (B, dirs * H): [fwd, bwd]


ENCODERS: dict[str, type[Encoder]] = {"lstm": LSTMEncoder}
