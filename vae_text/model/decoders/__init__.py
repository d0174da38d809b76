"""Decoders p(x|z): the protocol training, metrics and generation use (`Decoder`), and its
implementations, chosen by `model.decoder` from `DECODERS`.

base.py: the protocol, the LSTM and the registry DECODERS; transformer.py registers "transformer".
"""

from vae_text.model.decoders import transformer  # noqa: F401  (it registers "transformer")
from vae_text.model.decoders.base import (  # noqa: F401
    DECODERS,
    Decoder,
    LSTMDecoder,
    LSTMState,
)
