"""Training objectives: the protocol (`Objective`, `StepInput`, `StepOutput`) and the registry
`OBJECTIVES` keyed by config name (`objective=<name>`)."""

from vae_text.objectives.base import OBJECTIVES, Objective, StepInput, StepOutput, register

__all__ = ["OBJECTIVES", "Objective", "StepInput", "StepOutput", "register"]
