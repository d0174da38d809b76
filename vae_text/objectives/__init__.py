"""Training objectives: the protocol (`Objective`, `StepInput`, `StepOutput`), the registry
`OBJECTIVES` keyed by config name (`objective=<name>`), and the maths they share: the KL-weight
schedules (`SCHEDULES`, `kl_weight`), free bits and the ELBO. The objectives beyond the ELBO
(iwae, mdr, infovae, capacity; docs/objectives.md) register themselves when imported here.

May import: vae_text.core, vae_text.config, vae_text.model (never the loop: it calls them)."""

from vae_text.objectives import capacity, infovae, iwae, mdr  # noqa: F401  (they register)
from vae_text.objectives.base import OBJECTIVES, Objective, StepInput, StepOutput, register
from vae_text.objectives.elbo import Elbo, elbo_loss
from vae_text.objectives.free_bits import FREE_BITS_MODES, free_bits, free_bits_kl
from vae_text.objectives.schedules import (
    SCHEDULES,
    constant,
    cyclical,
    kl_weight,
    linear,
    logistic,
)

__all__ = ["FREE_BITS_MODES", "OBJECTIVES", "SCHEDULES", "Elbo", "Objective", "StepInput",
           "StepOutput", "constant", "cyclical", "elbo_loss", "free_bits", "free_bits_kl",
           "kl_weight", "linear", "logistic", "register"]
