"""Remedies against posterior collapse that change the loop: the protocol (`Remedy`, its hooks,
the `Loop` it sees, `Phase`), the registry `REMEDIES` and the two remedies of the papers.

May import: vae_text.core, vae_text.config, vae_text.data, vae_text.model, vae_text.objectives
(never the loop: it sees the loop only through `Loop`)."""

from vae_text.remedies.aggressive import (
    AggressiveInference,
    aggressive_encoder_updates,
    until_no_progress,
)
from vae_text.remedies.base import (
    NEEDS,
    REMEDIES,
    Loop,
    Phase,
    Remedy,
    build_remedies,
    check_needs,
    encoder_parameters,
    keys,
    options,
    register,
    update_only,
)
from vae_text.remedies.pretrain import EncoderPretraining, reinitialize_decoder

__all__ = ["NEEDS", "REMEDIES", "AggressiveInference", "EncoderPretraining", "Loop", "Phase",
           "Remedy", "aggressive_encoder_updates", "build_remedies", "check_needs",
           "encoder_parameters", "keys", "options", "reinitialize_decoder", "register", "until_no_progress",
           "update_only"]
