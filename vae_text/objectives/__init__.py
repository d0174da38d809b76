"""Training objectives: the protocol (`Objective`, `StepInput`, `StepOutput`) and the registry
`OBJECTIVES` keyed by config name (`objective=<name>`); the objectives beyond the ELBO register
themselves when their modules are imported here (docs/objectives.md)."""

from vae_text.objectives import capacity, infovae, iwae, mdr  # noqa: F401  (they register)
from vae_text.objectives.base import OBJECTIVES, Objective, StepInput, StepOutput, register

__all__ = ["OBJECTIVES", "Objective", "StepInput", "StepOutput", "register"]
