"""Sentence encoders (`Encoder`): token ids -> one feature vector per sentence, chosen by
`model.encoder` from `ENCODERS`.

base.py: the protocol, the LSTM and the registry ENCODERS; transformer.py registers "transformer".
"""

from vae_text.model.encoders import transformer  # noqa: F401  (it registers "transformer")
from vae_text.model.encoders.base import (  # noqa: F401
    ENCODERS,
    Encoder,
    LSTMEncoder,
)
