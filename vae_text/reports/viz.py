"""Tables and figures for looking at a model in a notebook (matplotlib is imported lazily)."""

from __future__ import annotations

import html

import torch
from torch import Tensor

from vae_text.model.latent import Posterior, Prior


def html_table(columns: dict[str, list]) -> str:
    """An HTML table with one column per key (for IPython.display.HTML)."""
    keys = list(columns)
    rows = zip(*(columns[k] for k in keys))
    head = "".join(f"<th style='text-align:left'>{html.escape(str(k))}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(str(v))}</td>"
                                    for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def pca_2d(x: Tensor) -> Tensor:
    """Project rows of x (N, D) on their first two principal components (N, 2)."""
    centred = x - x.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return centred @ v[:2].T


def plot_posterior_means(mu: Tensor, lengths: list[int], ax=None):
    """Posterior means in 2-D (PCA), coloured by sentence length."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 5))[1]
    xy = pca_2d(mu.detach().cpu().double())
    points = ax.scatter(xy[:, 0], xy[:, 1], c=lengths, s=6, cmap="viridis")
    ax.figure.colorbar(points, ax=ax, label="sentence length (words)")
    ax.set(title="posterior means, first two principal components", xlabel="PC 1", ylabel="PC 2")
    return ax


def plot_kl_per_dim(posterior: Posterior, prior: Prior, ax=None):
    """Mean KL(q(z|x) || p(z)) of each latent dimension over the given sentences, as bars (for
    a posterior and prior whose KL has a closed form per dimension)."""
    import matplotlib.pyplot as plt

    with torch.no_grad():
        kl = posterior.kl(prior)
    if kl is None or kl.shape[-1] != posterior.mean.shape[-1]:
        raise ValueError(f"{type(posterior).__name__} against {type(prior).__name__} has no "
                         f"closed-form KL per dimension to plot")
    kl = kl.detach().cpu().mean(0)
    ax = ax or plt.subplots(figsize=(8, 3))[1]
    ax.bar(range(len(kl)), kl.tolist())
    ax.set(title=f"KL per latent dimension (total {float(kl.sum()):.2f} nats)",
           xlabel="dimension", ylabel="KL (nats)")
    return ax
