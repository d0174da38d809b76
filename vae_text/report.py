"""Collect finished (and unfinished) runs into one table.

    python -m vae_text.report multirun/2026-11-24/19-40-00            # every job of a sweep
    python -m vae_text.report outputs/a outputs/b --out results/cmp   # any run directories

A run is a directory holding `config.yaml`; its numbers come from `eval_test.json` (the evaluation
suite) and `results.json`. Runs without them are listed as running or failed, not dropped.
Writes `<out>.md` and `<out>.csv` (default: `report.md` / `report.csv` in the first directory),
and three figures: `<out>_rate_distortion.png` (KL against reconstruction, one point per run, labelled
with its beta, with beta = 1 ELBO iso-lines), `<out>_curves.png` (train rec, KL and beta against
step, one line per run) and `<out>_validation.png` (validation NLL against epoch: an LM's exact NLL,
a VAE's -ELBO, with each finished run's test NLL and the reference numbers given as
`--mark RUN=NATS`, e.g. a paper's, as markers at its last epoch). Runs evaluated with
`generation=true` add the generation suite's columns and `<out>_quality_diversity.png` (forward
against reverse PPL, one point per run, labelled with its beta), taken from the newest
whole-test-split evaluation in the run directory that has them (`eval_test_k<K>.json` of
`python -m vae_text.evaluate ... generation=true`; never a `_n<N>` look).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from pathlib import Path

from vae_text.core.utils import atomic_write
from vae_text.metrics import METRICS
from vae_text.reports.figures import (
    is_done,
    per_token,
    plot_quality_diversity,
    plot_search,
    plot_validation,
    run_labels,
    validation_nll,
)

COLUMNS = [  # (key in the row, header, format)
    ("run", "run", "s"), ("overrides", "overrides", "s"),
    # the evaluation's: each registered metric names its own columns (vae_text.metrics)
    *((r.key, *r.column) for cls in METRICS.values() for r in cls.rows if r.column),
    # the generation suite (evaluate generation=true), when it ran: its "generation" object
    ("forward_ppl", "fwd PPL", ".1f"), ("reverse_ppl", "rev PPL", ".1f"),
    ("distinct_2", "dist-2", ".3f"), ("self_bleu", "self-BLEU", ".1f"), ("copy_rate", "copied", ".3f"),
    ("length_mean", "len", ".1f"), ("probe_accuracy", "len probe", ".3f"),
    ("interpolation_smoothness", "interp Δ", ".2f"),
    ("epochs", "epochs", "d"), ("train_minutes", "train min", ".1f"),
    ("best_val_neg_elbo", "best val -ELBO", ".2f"), ("best_val_rec", "best val rec", ".2f"),
    ("status", "status", "s"),
]
STOPPED = {"epochs": "epoch cap", "max_steps": "step cap", "early_stopping": "early stop",
           "max_minutes": "time budget", "lr_decays": "lr decays"}  # results.json's "stopped": what ended training


def find_runs(roots: list[Path]) -> list[Path]:
    runs = []
    for root in roots:
        if (root / "config.yaml").is_file():
            runs.append(root)
        else:
            runs.extend(sorted({p.parent for name in ("config.yaml", "error.txt")  # error.txt: a failed sweep job
                                for p in root.rglob(name)
                                if not {".hydra", "wandb", ".submitit"} & set(p.relative_to(root).parts)}))
    return runs


def overrides_of(run: Path) -> str:
    """The run's command-line overrides less where it ran and its restarts: the recipe."""
    path = run / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return ""
    lines = [line[2:].strip() for line in path.read_text().splitlines() if line.startswith("- ")]
    return " ".join(o for o in lines if not o.startswith(("data.dir", "data.cache_dir", "hydra.", "train.resume=")))


def kl_weight_of(run: Path) -> float | None:
    import yaml

    try:
        config = yaml.safe_load((run / "config.yaml").read_text()) or {}
        return float(config["objective"]["kl_weight"])
    except (KeyError, TypeError, ValueError, OSError, yaml.YAMLError):
        return None


def row_of(run: Path, root: Path) -> dict:
    row = {"run": str(run.relative_to(root)) if run != root and root in run.parents else run.name,
           "overrides": overrides_of(run), "path": run, "beta": kl_weight_of(run)}
    results, test = run / "results.json", run / "eval_test.json"
    if results.is_file() and test.is_file():
        res = json.loads(results.read_text())
        evaluation = json.loads(test.read_text())
        row.update({k: v for k, v in evaluation.items() if isinstance(v, (int, float))})
        row.update(generation_of(generation_evaluation(run)))
        row.update({k: v for k, v in res.items() if k.startswith("best_val_")})  # the sweeper's score
        stopped = STOPPED.get(res.get("stopped"))
        row.update(epochs=res["epochs"], train_minutes=res["train_seconds"] / 60,
                   status=f"done ({stopped})" if stopped else "done")
    elif (run / "error.txt").is_file():  # a sweep job that failed (vae_text.run.sweep)
        row["status"] = "failed: " + ((run / "error.txt").read_text().strip().splitlines() or ["?"])[-1]
    else:
        records = read_metrics(run / "metrics.jsonl")
        last = records[-1] if records else {}
        row["status"] = f"not finished (last step {last.get('step', 0)})"
    return row


_torn_said: set[Path] = set()


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl; a torn last line (a run killed while writing it) is
    skipped, and said so once."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError:
            if path not in _torn_said:
                _torn_said.add(path)
                where = "its torn last line" if i == len(lines) - 1 else f"its unreadable line {i + 1}"
                print(f"note: {path}: skipped {where} (a run killed while writing it)", file=sys.stderr)
    return records


WHOLE_TEST = re.compile(r"eval_test(_k\d+)?\.json")  # evaluate's names, never a max_sentences look


def generation_evaluation(run: Path) -> dict:
    """The run's newest whole-test-split evaluation with a generation object, or {}."""
    found = sorted((p for p in run.glob("eval_test*.json") if WHOLE_TEST.fullmatch(p.name)),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    return next((e for e in map(_json_or_none, found) if isinstance(e, dict) and e.get("generation")), {})


def _json_or_none(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def generation_of(evaluation: dict) -> dict:
    """The numbers of the generation object of an evaluation JSON (vae_text.generation.suite)."""
    gen = evaluation.get("generation") or {}
    return {k: v for k, v in gen.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in ("samples", "seconds", "seed")}


def markdown(rows: list[dict]) -> str:
    """The table; overrides every run shares are said once above it, so the column shows what
    tells the runs apart (the CSV keeps every run's full overrides)."""
    split = [r["overrides"].split() for r in rows]
    common = [o for o in split[0] if all(o in s for s in split[1:])] if len(rows) > 1 else []
    rows = [{**r, "overrides": " ".join(o for o in s if o not in common) or "–",
             "run": short_run(r, i)} for i, (r, s) in enumerate(zip(rows, split))]
    cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    lines = [f"Overrides common to every run: `{' '.join(common)}`", ""] if common else []
    lines += ["| " + " | ".join(h for _, h, _ in cols) + " |",
              "|" + "|".join("---" if f == "s" else "---:" for _, _, f in cols) + "|"]
    for r in rows:
        cells = [format(r[k], f) if k in r else "–" for k, _, f in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def short_run(row: dict, i: int) -> str:
    """The table's run cell: the folder name, or `#<n>` for a sweep job whose long folder name
    only repeats its overrides (the CSV keeps every folder name)."""
    return row["run"] if len(row["run"]) <= 24 or not row["overrides"] else f"#{i + 1}"


def history(run: Path, keys=("train/rec", "train/kl", "train/beta")) -> dict[str, list]:
    """Steps and values of the train metrics of a run, read from its metrics.jsonl."""
    out = {k: ([], []) for k in keys}
    for record in read_metrics(run / "metrics.jsonl"):
        for k in keys:
            if k in record:
                out[k][0].append(record["step"])
                out[k][1].append(record[k])
    return out


def plot_rate_distortion(rows: list[dict], path: Path) -> list[str]:
    """KL (rate) against rec (distortion) per finished run, with beta = 1 ELBO iso-lines.
    Returns the point labels drawn, in order of KL."""
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
        ax.scatter(kl, rec, color="tab:blue", zorder=3)
        for i, r in enumerate(sorted(done, key=lambda r: r["kl"])):  # neighbours: labels above/below
            label = f"β={r['beta']:g}" if by_beta else r["run"]
            labels.append(label)
            ax.annotate(label, (r["kl"], r["rec"]), textcoords="offset points",
                        xytext=(5, 4 if i % 2 == 0 else -11), fontsize=8)
        wide = max(kl) > 50 * (min(kl) + 1)  # e.g. a beta = 0 job beside collapsed ones: symlog axis
        x_lo, x_hi = (min(kl + [0.0]) - 0.5, max(kl) * 1.15 + 1.0) if not wide else (0.0, max(kl) * 2)
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
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return labels


def plot_curves(rows: list[dict], path: Path) -> None:
    """Train (solid) and validation (dashed) curves against step: rec per token, KL, β."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("train/rec", "train/rec_per_token", "train/kl", "train/beta", "val/rec", "val/kl",
            "val/sentences", "val/tokens")
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for i, (r, label) in enumerate(zip(rows, run_labels(rows))):
        curves, color = history(r["path"], keys), f"C{i % 10}"
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
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8,
               title="solid: train (mean over log_every steps), dashed: validation", title_fontsize=8)
    fig.tight_layout(rect=(0, 0.06 + 0.04 * ((len(labels) - 1) // 6), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def log_to_wandb(rows: list[dict], figures: dict[str, Path], sweep: Path, project: str,
                 mode: str) -> None:
    """One wandb run named "report" in the sweep's group: the table and the figures as images."""
    import wandb

    keys = [k for k, _, _ in COLUMNS if any(k in r for r in rows)]
    run = wandb.init(project=project, group=f"{sweep.parent.name}/{sweep.name}", name="report",
                     job_type="report", mode=mode, dir=str(sweep))
    try:
        table = wandb.Table(columns=keys, data=[[r.get(k) for k in keys] for r in rows])
        run.log({"report/table": table,
                 **{f"report/{name}": wandb.Image(str(path)) for name, path in figures.items()}})
    finally:
        run.finish()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tabulate vae_text runs (markdown + CSV).")
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep directories")
    parser.add_argument("--out", type=Path, help="output path without suffix")
    parser.add_argument("--mark", action="append", default=[], metavar="RUN=NATS",
                        help="a reference test NLL (e.g. a paper's) drawn as a star at RUN's last "
                             "epoch on the validation figure; repeatable")
    parser.add_argument("--wandb", action="store_true",
                        help="also log the table and figures to a wandb run (group: the sweep)")
    parser.add_argument("--wandb-project", default="vae_text")
    parser.add_argument("--wandb-mode", default="offline", choices=["offline", "online", "disabled"])
    args = parser.parse_args(argv)
    missing = [d for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"error: {missing[0]}: not a directory; pass run or sweep directories", file=sys.stderr)
        return 2
    rows = [row_of(run, root) for root in args.dirs for run in find_runs([root])]
    if not rows:
        print(f"error: no runs (folders with config.yaml) under {' '.join(map(str, args.dirs))}",
              file=sys.stderr)
        return 2
    marks = {}
    for mark in args.mark:
        run, _, nats = mark.rpartition("=")  # a run name may hold "=" (a sweep job)
        try:
            marks[run] = float(nats)
        except ValueError:
            print(f"error: --mark {mark}: give RUN=NATS, e.g. --mark ptb_paper_lm=101.04", file=sys.stderr)
            return 2
        if run not in {r["run"] for r in rows}:
            print(f"error: --mark {mark}: no run named {run!r}; runs: {', '.join(r['run'] for r in rows)}",
                  file=sys.stderr)
            return 2
    out = args.out or args.dirs[0] / "report"
    out.parent.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    atomic_write(out.with_suffix(".md"), table + "\n")
    keys = [k for k, _, _ in COLUMNS if any(k in r for r in rows)]
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=keys + ["beta"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out.with_suffix(".csv"), buffer.getvalue())
    figures = {"rate_distortion": out.parent / f"{out.name}_rate_distortion.png",
               "curves": out.parent / f"{out.name}_curves.png"}
    plot_rate_distortion(rows, figures["rate_distortion"])
    plot_curves(rows, figures["curves"])
    validation = out.parent / f"{out.name}_validation.png"
    curves = [validation_nll(read_metrics(r["path"] / "metrics.jsonl")) for r in rows]
    if plot_validation(rows, curves, validation, marks):
        figures["validation"] = validation
    quality = out.parent / f"{out.name}_quality_diversity.png"
    if plot_quality_diversity(rows, quality):
        figures["quality_diversity"] = quality
        print(f"wrote {quality}")
    search = out.parent / f"{out.name}_search.png"  # an Optuna search: score against its parameters
    if any((d / "optimization_results.yaml").is_file() for d in args.dirs) and plot_search(rows, search):
        figures["search"] = search
    if args.wandb:
        log_to_wandb(rows, figures, args.dirs[0], args.wandb_project, args.wandb_mode)
    print(table)
    print(f"wrote {out}.md, {out}.csv, " + ", ".join(str(p) for p in figures.values()))
    for r in rows:
        if not is_done(r):
            print(f"note: {r['run']}: {r['status']}" if r["status"].startswith("failed") else
                  f"note: {r['run']} is {r['status']}: running, stopped or failed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
