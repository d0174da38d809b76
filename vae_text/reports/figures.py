"""Figures of the report beside the table: helpers for the curves, the quality-diversity figure
of the generation suite, and the search figure of an Optuna sweep (vae_text.report draws them)."""

from __future__ import annotations

from pathlib import Path


def per_token(curves: dict, split: str) -> tuple[list, list]:
    """A split's rec in nats per token: train/rec_per_token where logged, else val's rec scaled
    by its sentences over its tokens (per-sentence rec jumps with the length of a bucketed batch)."""
    if split == "train":
        return curves["train/rec_per_token"] if curves["train/rec_per_token"][0] else curves["train/rec"]
    steps, rec = curves["val/rec"]
    ratio = [s / t for s, t in zip(curves["val/sentences"][1], curves["val/tokens"][1])]
    return (steps, [r * q for r, q in zip(rec, ratio)]) if len(ratio) == len(rec) else (steps, rec)


def run_labels(rows: list[dict]) -> list[str]:
    """Short line labels: β in a β sweep, else the overrides that tell the runs apart."""
    betas = [r["beta"] for r in rows]
    if None not in betas and len(set(betas)) == len(betas):
        return [f"β={b:.3g}" for b in betas]
    split = [r["overrides"].split() for r in rows]
    common = set.intersection(*map(set, split)) if split else set()
    return [" ".join(o for o in s if o not in common) or r["run"] for r, s in zip(rows, split)]


def swept_values(rows: list[dict]) -> dict[str, list[float]]:
    """The numeric overrides that differ between runs (a sweep's or a search's parameters)."""
    values: dict[str, list] = {}
    for r in rows:
        pairs = dict(o.split("=", 1) for o in r["overrides"].split() if "=" in o)
        for key, value in pairs.items():
            values.setdefault(key.lstrip("+"), []).append(value)
    out = {}
    for key, vals in values.items():
        try:
            numbers = [float(v) for v in vals]
        except ValueError:
            continue
        if len(numbers) == len(rows) and len(set(numbers)) > 1:
            out[key] = numbers
    return out


def plot_search(rows: list[dict], path: Path) -> bool:
    """A sweep's or search's score (the best validation value each job returned) against each
    swept parameter, and by the order the jobs finished. False when there is nothing to draw."""
    done = [r for r in rows if any(k.startswith("best_val_") for k in r)]
    if len(done) < 2:
        return False
    monitor = next(k for k in done[0] if k.startswith("best_val_"))
    done = [r for r in done if monitor in r]
    params = swept_values(done)
    if not params:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    score = [r[monitor] for r in done]
    order = sorted(range(len(done)), key=lambda i: (done[i]["path"] / "results.json").stat().st_mtime)
    fig, axes = plt.subplots(1, len(params) + 1, figsize=(3.6 * (len(params) + 1), 3.6), squeeze=False)
    axes = axes[0]
    best_so_far = [min(score[j] for j in order[: n + 1]) for n in range(len(order))]
    axes[0].plot(range(1, len(order) + 1), [score[i] for i in order], "o", ms=4, label="job")
    axes[0].plot(range(1, len(order) + 1), best_so_far, "-", color="C3", label="best so far")
    axes[0].set(xlabel="job (in the order it finished)", title="search",
                ylabel=f"validation {monitor[9:]} (nats / sentence)")
    axes[0].legend(fontsize=7)
    for ax, (key, xs) in zip(axes[1:], params.items()):
        ax.scatter(xs, score, s=14, c=[order.index(i) for i in range(len(done))], cmap="viridis")
        if min(xs) > 0 and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
        ax.set(xlabel=key, title=key.rpartition(".")[2])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def is_done(row: dict) -> bool:
    """A run with a test evaluation: status "done" or "done (<what ended training>)"."""
    return row["status"].startswith("done")


def plot_quality_diversity(rows: list[dict], path: Path) -> list[str]:
    """Forward PPL (fluency) against reverse PPL (coverage) of the finished runs that ran the
    generation suite with a reference LM, labelled by beta: the quality-diversity trade-off.
    Returns the labels drawn (none: no figure is written)."""
    points = [r for r in rows if is_done(r) and r.get("forward_ppl") and r.get("reverse_ppl")]
    if not points:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    betas = [r["beta"] for r in points]
    by_beta = None not in betas and len(set(betas)) == len(betas)
    labels = []
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter([r["forward_ppl"] for r in points], [r["reverse_ppl"] for r in points], zorder=3)
    for r in sorted(points, key=lambda r: r["beta"] if by_beta else r["run"]):
        labels.append(f"β={r['beta']:g}" if by_beta else r["run"])
        ax.annotate(labels[-1], (r["forward_ppl"], r["reverse_ppl"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    ax.margins(0.15)  # room for the run names beside the outermost points
    # labels short enough for the axes: the long y label used to run off the figure
    ax.set(xlabel="forward PPL: samples under a reference LM (fluency)",
           ylabel="reverse PPL: test under a samples' LM (coverage)",
           title="prior samples: quality and diversity (lower is better on both)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return labels


def validation_nll(records: list[dict]) -> tuple[list[int], list[float], str]:
    """A run's validation NLL per epoch, in nats per sentence, from its metrics.jsonl records:
    the exact NLL of a language model (val/nll), else the VAE's -ELBO (val/neg_elbo at beta = 1,
    an upper bound on its NLL). Returns the epochs, the values and which of the two it is."""
    key = "val/nll" if any("val/nll" in r for r in records) else "val/neg_elbo"
    epochs, values = [], []
    for r in records:
        if key in r and "epoch" in r:
            if epochs and r["epoch"] == epochs[-1]:  # a resumed run's repeated epoch: the last wins
                values[-1] = r[key]
            else:
                epochs.append(r["epoch"])
                values.append(r[key])
    return epochs, values, "NLL (exact)" if key == "val/nll" else "-ELBO"


def plot_validation(rows: list[dict], curves: list[tuple], path: Path,
                    marks: dict[str, float] | None = None) -> list[str]:
    """Validation NLL (an LM's exact NLL, a VAE's -ELBO) against epoch, one line per run
    (`curves`: validation_nll(...) of each row, in order), with each finished run's own test NLL (hollow circle:
    IW-NLL for a VAE) and the reference numbers of `marks` (run -> nats, stars, e.g. a paper's
    test figures) at its last epoch. Returns the runs drawn (none: no figure is written)."""
    if not any(epochs for epochs, _, _ in curves):
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    marks = marks or {}
    drawn, lows = [], []
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, (r, (epochs, values, what)) in enumerate(zip(rows, curves, strict=True)):
        if not epochs:
            continue
        color = f"C{i % 10}"
        ax.plot(epochs, values, marker=".", lw=1.2, color=color, label=f"{r['run']} (val {what})")
        lows.append(min(values))
        test = r.get("nll_iw", r.get("nll")) if is_done(r) else None
        if test is not None:
            ax.scatter([epochs[-1]], [test], s=50, facecolors="none", edgecolors=color, zorder=3)
            lows.append(test)
        if r["run"] in marks:
            ax.scatter([epochs[-1]], [marks[r["run"]]], s=90, marker="*", color=color, zorder=3)
            lows.append(marks[r["run"]])
        drawn.append(r["run"])
    ax.set_ylim(min(lows) - 1.0, min(lows) + 20.0)  # the tail matters; the first epochs are far above
    ax.set(xlabel="epoch", ylabel="nats / sentence", title="validation NLL against epoch")
    ax.text(0.99, 0.98, "○ the run's test NLL (IW-NLL for a VAE)" + ("   ★ reference test figure" if marks else ""),
            transform=ax.transAxes, ha="right", va="top", fontsize=7, color="grey")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return drawn


def plot_rate_distortion(rows: list[dict], path: Path) -> list[str]:
    """KL (rate) against rec (distortion) per finished run, with beta = 1 ELBO iso-lines.
    Returns the point labels drawn, in order of KL."""
    import matplotlib.pyplot as plt

    fig, labels = rate_distortion_figure(rows)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return labels


def rate_distortion_figure(rows: list[dict]):
    """The figure of `plot_rate_distortion` and its point labels. The rate axis starts at 0 (a
    KL is never negative; a Monte Carlo KL a hair below 0 moves it left just enough)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if is_done(r)]
    labels = []
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    if done:
        kl = [r["kl"] for r in done]
        rec = [r["rec"] for r in done]
        betas = [r["beta"] for r in done]
        by_beta = None not in betas and len(set(betas)) == len(betas)  # a beta sweep
        ax.scatter(kl, rec, color="tab:blue", zorder=3, clip_on=False)  # whole markers on the axis at KL 0
        for i, r in enumerate(sorted(done, key=lambda r: r["kl"])):  # neighbours: labels above/below
            label = f"β={r['beta']:g}" if by_beta else r["run"]
            labels.append(label)
            ax.annotate(label, (r["kl"], r["rec"]), textcoords="offset points",
                        xytext=(5, 4 if i % 2 == 0 else -11), fontsize=8)
        wide = max(kl) > 50 * (min(kl) + 1)  # e.g. a beta = 0 job beside collapsed ones: symlog axis
        x_lo = min(0.0, *kl)
        x_hi = max(kl) * 2 if wide else max(kl) * 1.15 + 1.0
        if wide:
            ax.set_xscale("symlog", linthresh=1.0)
        y_lo, y_hi = min(rec) - 2.0, max(rec) + 2.0
        best = min(a + b for a, b in zip(kl, rec))
        xs = [x_lo + (x_hi - x_lo) * (i / 400) ** 3 for i in range(401)]  # dense: curved on symlog
        for offset in (0.0, 2.0, 5.0, 10.0, 20.0):  # equal -ELBO (beta = 1): rec = c - KL
            c = best + offset
            ax.plot(xs, [c - x for x in xs], ls="--", lw=0.8, color="grey", zorder=1)
        ax.text(0.99, 0.98, f"dashed: β = 1 −ELBO = {best:.1f} (best run) + 0, 2, 5, 10, 20 nats",
                transform=ax.transAxes, ha="right", va="top", fontsize=7, color="grey")
        ax.set_xlim(x_lo, x_hi)
        ax.set_ylim(y_lo, y_hi)
    ax.set(xlabel="rate: KL (nats / sentence)", ylabel="distortion: rec (nats / sentence)",
           title="rate-distortion on the test set")
    fig.tight_layout()
    return fig, labels


CURVE_KEYS = ("train/rec", "train/rec_per_token", "train/kl", "train/beta", "val/rec", "val/kl",
              "val/sentences", "val/tokens")  # what `plot_curves` reads of each run's metrics.jsonl


def plot_curves(rows: list[dict], histories: list[dict], path: Path) -> list[str]:
    """Train (solid) and validation (dashed) curves against step: rec per token, KL, β.
    `histories`: each row's {key: (steps, values)} of CURVE_KEYS. Returns the legend's labels."""
    import matplotlib.pyplot as plt

    fig = curves_figure(rows, histories)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the legend below the panels is in the picture
    labels = [t.get_text() for t in fig.legends[0].get_texts()] if fig.legends else []
    plt.close(fig)
    return labels


def curves_figure(rows: list[dict], histories: list[dict]):
    """The figure of `plot_curves`. Only runs with a curve are in the legend (a job that failed
    before its first log line has none); the legend sits below the panels, clear of their x
    labels. A run keeps its colour C<i> by its place in `rows`, as on the other figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    drawn = [i for i, curves in enumerate(histories) if any(steps for steps, _ in curves.values())]
    for i, label in zip(drawn, run_labels([rows[i] for i in drawn]), strict=True):
        curves, color = histories[i], f"C{i % 10}"
        axes[0].plot(*per_token(curves, "train"), lw=1, color=color, label=label)
        axes[0].plot(*per_token(curves, "val"), lw=1.5, ls="--", marker=".", color=color)
        axes[1].plot(*curves["train/kl"], lw=1, color=color)
        axes[1].plot(*curves["val/kl"], lw=1.5, ls="--", marker=".", color=color)
        axes[2].plot(*curves["train/beta"], lw=1, color=color)
    axes[0].set(title="reconstruction", ylabel="rec (nats / token)")
    axes[1].set(title="KL", ylabel="KL (nats / sentence)")
    axes[2].set(title="KL weight β", ylabel="β")
    for ax in axes:
        ax.set_xlabel("step (optimizer updates)")
    axes[1].set_yscale("symlog", linthresh=1.0)  # an autoencoder phase's KL dwarfs the rest
    fig.tight_layout()
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        columns = min(len(labels), 6, max(1, 150 // max(map(len, labels))))  # long labels: fewer
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=columns, fontsize=8, title_fontsize=8,
                   title="solid: train (mean over log_every steps), dashed: validation")
    return fig
