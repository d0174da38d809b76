"""Latent distributions: posterior families q(z|x) and priors p(z), the one home of their maths.

base.py holds the protocols (`Posterior`, `Prior`), the registries (`POSTERIORS`, `PRIORS`, keyed
by config name), the closed-form KL table (`register_kl`), the diagonal Gaussian and the standard
normal; vmf.py, mixture.py and flow.py add their families to the registries when this package is
imported (docs/latents.md describes each).
"""

from vae_text.model.latent import flow, mixture, vmf  # noqa: F401  (they register their families)
from vae_text.model.latent.base import (  # noqa: F401
    _KL,
    _TOTAL_ONLY,
    LOG_2PI,
    POSTERIORS,
    PRIORS,
    DiagonalGaussian,
    GaussianHead,
    Posterior,
    Prior,
    StandardNormal,
    _closed_form,
    _gaussian_standard_normal,
    _noise,
    gaussian_kl,
    kl_per_dimension,
    kl_term,
    register_kl,
)
