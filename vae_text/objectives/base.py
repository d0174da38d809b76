"""The objective protocol: what one training step minimises, given the model's output for a batch.

The loop runs the model on this process's rows of a (global) batch and hands the result to the
objective as a `StepInput`; the objective returns a `StepOutput` (the loss to differentiate and the
whole batch's statistics). The loop does no loss arithmetic of its own.

An objective is a class registered in `OBJECTIVES` under its config name (`objective=<name>`,
`conf/objective/<name>.yaml`); the keyword arguments of its `__init__` after `cfg` are its options
(`objective.args.<key>`), with their defaults. It may hold state (a Lagrange multiplier, a running
estimate): `state_dict` / `load_state_dict` carry it through checkpoints, exactly.

Conventions (docs/protocol.md): a sentence's reconstruction term is the *sum* of its token NLLs;
losses and statistics are averaged over the sentences of the whole batch, so a weight means the same
whatever the batch size, sentence length or number of processes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

from vae_text.core.registry import registrar

if TYPE_CHECKING:  # annotations only
    from vae_text.config import ObjectiveConfig
    from vae_text.model.latent import Prior
    from vae_text.model.textvae import Output


@dataclass
class StepInput:
    """One process's share of a batch through the model.

    With `samples` = K > 1 every sentence was run K times, sentence-major: row r * K + k of `out`
    is the k-th posterior draw of this share's sentence r (the encoder ran once per row).
    """

    out: Output  # rec (R,), kl (R, Z) or (R, 1), posterior and z (R, Z) of this share's R rows
    prior: Prior | None  # p(z) of the model (None for a language model)
    samples: int  # K: posterior draws per sentence (the objective's `samples`)
    batch_size: int  # B: sentences of the whole batch, over all processes
    share: float  # 1.0; 0.0 for a process that got no sentence (it takes part with a zero loss)
    step: int  # optimizer steps since the current phase began (schedules count from it)
    beta: float  # the KL weight of this step: `Objective.beta(step)` after the remedies' hooks
    # sum over processes, element-wise: a float64 copy on the input's device, no gradient (in one
    # process the values as they are); never read back to the host, and one collective a call in a
    # distributed run: reduce what you need in one call
    reduce: Callable[[Tensor], Tensor]
    first: int = 0  # the whole batch's index of this share's first sentence (its rows follow)


@dataclass
class StepOutput:
    loss: Tensor  # this share's loss: the shares' sum over processes is the whole batch's loss
    # 0-dim float64 tensors, whole-batch values ("loss", "rec", "kl" and its own), on the device:
    # the loop reads them once per log line, so an objective must not read them back either
    stats: dict[str, Tensor]


class Objective:
    """The base of every objective; subclasses set `name`, implement `__call__`, and may
    override `beta`, `after_step` and the state methods."""

    name: ClassVar[str] = ""  # its key in OBJECTIVES
    needs_latent: ClassVar[bool] = True  # False: it also trains a language model (model.kind=lm)
    samples: int = 1  # posterior draws per sentence that `__call__` needs
    state_keys: tuple[str, ...] = ()  # attributes saved in checkpoints

    def __init__(self, cfg: ObjectiveConfig):
        self.cfg = cfg

    def beta(self, step: int) -> float:
        """The KL weight at `step` (steps since the phase began), before the remedies' hooks."""
        return 1.0

    def __call__(self, inp: StepInput) -> StepOutput:
        raise NotImplementedError

    def after_step(self, stats: dict[str, Tensor]) -> None:
        """After each optimizer step of the model (not a remedy's inner steps), with that step's
        statistics: where a multiplier or running estimate is updated, as a device tensor (reading
        a statistic back to the host here would make every step wait for the device)."""

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.state_keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in self.state_keys:
            setattr(self, k, state[k])


OBJECTIVES: dict[str, type[Objective]] = {}


register = registrar(OBJECTIVES, "objectives")
