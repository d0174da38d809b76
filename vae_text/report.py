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

A file of a run that cannot be read (a torn or foreign results.json or eval_test.json, an
overrides.yaml that is not UTF-8) or an --out that cannot be written is one line naming it and
the fix, exit status 2, and nothing is written. A negative MI gets a footnote: it is an estimate.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from pathlib import Path

from vae_text.config import LoggerConfig
from vae_text.core.errors import DataError, VaeTextError
from vae_text.core.utils import atomic_write, check_writable
from vae_text.data.text import file_bytes
from vae_text.metrics import METRICS
from vae_text.metrics.information import MI_BELOW_ZERO
from vae_text.reports.figures import (
    CURVE_KEYS,
    is_done,
    plot_curves,
    plot_quality_diversity,
    plot_rate_distortion,
    plot_search,
    plot_validation,
    validation_nll,
)
from vae_text.run.logger import check_wandb_login
from vae_text.run.record import STAGING

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


SKIPPED = {".hydra", "wandb", ".submitit", STAGING}  # STAGING: a resume in progress, not a run


def find_runs(roots: list[Path]) -> list[Path]:
    runs = []
    for root in roots:
        if (root / "config.yaml").is_file():
            runs.append(root)
        else:
            runs.extend(sorted({p.parent for name in ("config.yaml", "error.txt")  # error.txt: a failed sweep job
                                for p in root.rglob(name)
                                if not SKIPPED & set(p.relative_to(root).parts)}))
    return runs


def overrides_of(run: Path) -> str:
    """The run's command-line overrides less where it ran and its restarts: the recipe."""
    path = run / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return ""
    fix = "re-encode it as UTF-8, or delete it (the run is then listed without its overrides)"
    lines = [line[2:].strip() for line in text_of(path, fix).splitlines() if line.startswith("- ")]
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
        res = json_of(results, ("epochs", "train_seconds"))
        evaluation = json_of(test)
        row.update({k: v for k, v in evaluation.items() if isinstance(v, (int, float))})
        row.update(generation_of(generation_evaluation(run)))
        row.update({k: v for k, v in res.items() if k.startswith("best_val_")})  # the sweeper's score
        stopped = STOPPED.get(res.get("stopped"))
        row.update(epochs=res["epochs"], train_minutes=res["train_seconds"] / 60,
                   status=f"done ({stopped})" if stopped else "done")
    elif (run / "error.txt").is_file():  # a sweep job that failed (vae_text.run.sweep)
        error = (run / "error.txt").read_text(encoding="utf-8", errors="replace")
        row["status"] = "failed: " + (error.strip().splitlines() or ["?"])[-1]
    else:
        records = read_metrics(run / "metrics.jsonl")
        last = records[-1] if records else {}
        row["status"] = f"not finished (last step {last.get('step', 0)})"
    return row


def text_of(path: Path, fix: str) -> str:
    """A UTF-8 file of a run; unreadable or not UTF-8: a `DataError` naming it and `fix`."""
    raw = file_bytes(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 (byte {raw[err.start]:#04x} at offset "
                        f"{err.start}); {fix}") from None


def json_of(path: Path, need: tuple[str, ...] = ()) -> dict:
    """A run's JSON object (results.json, eval_test.json) with the numbers `need`s; a torn,
    hand-edited or foreign file is a `DataError` naming it and the fix."""
    fix = (f"delete it to list the run as not finished, or leave the run ({path.parent}) out of "
           f"the folders given")
    try:
        data = json.loads(text_of(path, fix))
    except ValueError as err:  # json.JSONDecodeError
        raise DataError(f"{path}: not valid JSON (line {err.lineno} column {err.colno}: "
                        f"{err.msg}; a torn or hand-edited file); {fix}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: holds a JSON {type(data).__name__}, not an object; {fix}")
    for key in need:
        if isinstance(data.get(key), bool) or not isinstance(data.get(key), (int, float)):
            raise DataError(f"{path}: has no number {key!r} (vae_text.train writes "
                            f"{', '.join(need)} there); {fix}")
    return data


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
    if any(r.get("mi", 0) < 0 for r in rows):
        lines += ["", f"Note: MI is {MI_BELOW_ZERO}."]
    return "\n".join(lines)


def short_run(row: dict, i: int) -> str:
    """The table's run cell: the folder name, or `#<n>` for a sweep job whose long folder name
    only repeats its overrides (the CSV keeps every folder name)."""
    return row["run"] if len(row["run"]) <= 24 or not row["overrides"] else f"#{i + 1}"


def history(records: list[dict], keys=("train/rec", "train/kl", "train/beta")) -> dict[str, list]:
    """Steps and values of the train metrics of a run, from the records of its metrics.jsonl."""
    out = {k: ([], []) for k in keys}
    for record in records:
        for k in keys:
            if k in record:
                out[k][0].append(record["step"])
                out[k][1].append(record[k])
    return out


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
    parser = argparse.ArgumentParser(prog="python -m vae_text.report",  # not "report.py"
                                     description="Tabulate vae_text runs (markdown + CSV).")
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
    try:
        return report(args)
    except VaeTextError as err:  # a run's unreadable file, an --out that cannot be written
        print(f"error: {err}", file=sys.stderr)
        return 2


def report(args: argparse.Namespace) -> int:
    """The table, the CSV and the figures of `main`'s arguments; every run is read (and --out
    checked) before anything is written."""
    if args.wandb:
        check_wandb_login(LoggerConfig(name="wandb", mode=args.wandb_mode), "--wandb-mode")
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
    try:
        check_writable(out.parent)
    except VaeTextError as err:
        raise type(err)(f"--out {out}: {err}; choose --out in a folder you can write") from None
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
    records = [read_metrics(r["path"] / "metrics.jsonl") for r in rows]
    plot_curves(rows, [history(rec, CURVE_KEYS) for rec in records], figures["curves"])
    validation = out.parent / f"{out.name}_validation.png"
    curves = [validation_nll(rec) for rec in records]
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
