"""Evaluation metrics (defined in docs/protocol.md), each an accumulator registered by name.

base.py: the protocol (`Metric`, `BatchResult`, `EvalContext`, merging by name), the registry
METRICS and `register`; elbo.py: ELBO terms and rec at z = mean; iw.py: the IW-NLL; information.py:
MI and active units; recon.py: reconstructions; suite.py: `evaluate`, which loops over the metrics
`eval.metrics` names. Adding one: a `Metric` subclass with `@register` (docs/extending.md).

May import: vae_text.core, vae_text.config, vae_text.data, vae_text.model.
"""

from vae_text.config import EvalConfig
from vae_text.metrics import elbo, information, iw, recon  # noqa: F401  (they register their metrics)
from vae_text.metrics.base import (
    METRICS,
    BatchResult,
    EvalContext,
    Metric,
    Row,
    _exp,
    reduce_states,
    register,
    select,
    sentence_noise,
)
from vae_text.metrics.elbo import batch_elbo
from vae_text.metrics.information import MI_ESTIMATOR, active_units, mutual_information
from vae_text.metrics.iw import iw_log_likelihood
from vae_text.metrics.recon import token_hits
from vae_text.metrics.suite import evaluate, evaluate_to

__all__ = ["METRICS", "MI_ESTIMATOR", "BatchResult", "EvalConfig", "EvalContext", "Metric", "Row",
           "_exp", "active_units", "batch_elbo", "evaluate", "evaluate_to", "iw_log_likelihood",
           "mutual_information", "reduce_states", "register", "select", "sentence_noise", "token_hits"]
