"""The metric protocol: an accumulator over the batches of a split, merged across processes by name.

    metric = METRICS[name](ctx)          # once per evaluation, if `applies(ctx)`
    metric.update(result)                # each batch this process evaluates (`BatchResult`)
    state = reduce_states([m.state() for m in every_process])   # by name: sums add, lists concatenate
    metric.finish(state) -> {"key": value, ...}                  # the numbers of the whole split

`state()` returns named parts: tensors or numbers, which are summed over processes, and lists
(per-sentence items in this process's order), which are concatenated in rank order. There is no
positional index: a metric reads back exactly the names it wrote.

A metric is a class registered under its config name (`@register`, `eval.metrics=[...]`), also
from a user's own module; `rows` describes its outputs for the printed table and the report.
The noise of a sentence's posterior samples is seeded from (seed, its token ids), so every metric
is the same whatever the batch size, padding, order or number of processes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from vae_text.config import EvalConfig
from vae_text.core.distributed import Dist
from vae_text.core.errors import ConfigError
from vae_text.core.registry import registrar
from vae_text.data.batches import Batch, Split

if TYPE_CHECKING:  # annotations only
    from vae_text.data.tokenizer import Tokenizer
    from vae_text.model.latent import Posterior
    from vae_text.model.textvae import TextVAE


class Row(NamedTuple):
    """One output of a metric as shown to people: the table of `vae_text.evaluate` (label, fmt)
    and the runs table of `vae_text.report` (column: its header and format; None: not there)."""

    key: str
    label: str
    fmt: str
    column: tuple[str, str] | None = None


@dataclass
class EvalContext:
    """What every metric of one evaluation may read."""

    model: TextVAE
    split: Split
    cfg: EvalConfig
    tokenizer: Tokenizer | None = None
    full: bool = True  # False: the per-epoch validation (no reconstructions)
    dist: Dist = field(default_factory=Dist)
    progress: Path | None = None  # where resumable metrics keep their work (vae_text.metrics.progress)
    device: torch.device = torch.device("cpu")


@dataclass
class BatchResult:
    """One batch through the model once (the encoder pass the metrics share)."""

    batch: Batch
    rec: Tensor  # (B,) -log p(x|z), one posterior sample (z = mean for a deterministic code)
    kl: Tensor  # (B, Z) per dimension, (B, 1), or (B, 0) without a latent: see latent.kl_term
    q: Posterior | None  # q(z|x) of the batch; None for a language model

    @cached_property
    def mean(self) -> Tensor:
        """E_q[z] (B, Z), computed once for the metrics that use it (an IAF's is Monte Carlo)."""
        return self.q.mean


class Metric:
    """The base of every metric; subclasses set `name` and `rows` and implement `update`,
    `state` and `finish` (and `applies` when they need something of the model or config)."""

    name: ClassVar[str] = ""  # its key in METRICS and in `eval.metrics`
    rows: ClassVar[tuple[Row, ...]] = ()
    progress: str | None = None  # a slow metric's progress-bar label (None: no bar for it)

    def __init__(self, ctx: EvalContext):
        self.ctx = ctx

    @classmethod
    def applies(cls, ctx: EvalContext) -> bool:
        """Whether it has a value for this model and config (no MI without a latent)."""
        return True

    def update(self, result: BatchResult) -> None:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    def finish(self, state: dict[str, Any]) -> dict[str, Any]:
        """The whole split's outputs from the state merged over processes (`reduce_states`)."""
        raise NotImplementedError

    @classmethod
    def table(cls, out: dict[str, Any]) -> list[tuple[str, str]]:
        """(label, formatted value) of its outputs present in `out`."""
        return [(r.label, format(out[r.key], r.fmt)) for r in cls.rows if r.key in out]


METRICS: dict[str, type[Metric]] = {}


register = registrar(METRICS, "metrics")


def select(cfg: EvalConfig) -> list[type[Metric]]:
    """The classes `cfg.metrics` names, in its order; an unknown name is a one-line ConfigError."""
    for name in cfg.metrics:
        if name not in METRICS:
            raise ConfigError(f"{cfg.where}metrics={name!r} is unknown: choose one of "
                              f"{sorted(METRICS)} (or register your own: vae_text.metrics.register)")
    return [METRICS[name] for name in cfg.metrics]


def reduce_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """One state from every process's (in rank order), by name: lists concatenate, the rest
    (tensors, numbers) add up."""
    out = {}
    for name in states[0]:
        parts = [s[name] for s in states]
        out[name] = [x for p in parts for x in p] if isinstance(parts[0], list) else sum(parts)
    return out


def sentence_noise(tokens: Tensor, lengths: Tensor, samples: int, latent: int, seed: int,
                   salt: str = "") -> Tensor:
    """Standard-normal noise (B, samples, latent), each row seeded from its sentence's ids
    (`latent`: the posterior's noise_size)."""
    rows = []
    for ids, n in zip(tokens.tolist(), lengths.tolist()):
        key = hashlib.blake2b(f"{seed}{salt}:{ids[:n]}".encode(), digest_size=8).digest()
        g = torch.Generator().manual_seed(int.from_bytes(key, "little") & (2**63 - 1))
        rows.append(torch.randn(samples, latent, generator=g, device="cpu"))  # the generator's
    return torch.stack(rows).to(tokens.device)


def _exp(x: float) -> float:
    """exp, with infinity (written as null in JSON) where a diverged model's NLL overflows it."""
    return math.inf if x >= 709.0 else math.exp(x)
