"""Collect finished (and unfinished) runs into one table.

    python -m vae_text.report multirun/2026-11-24/19-40-00            # every job of a sweep
    python -m vae_text.report outputs/a outputs/b --out results/cmp   # any run directories

A run is a directory holding `config.yaml`; its numbers come from `eval_test.json` (the evaluation
suite) and `results.json`. Runs without them are listed as running or failed, not dropped.
Writes `<out>.md` and `<out>.csv` (default: `report.md` / `report.csv` in the first directory).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

COLUMNS = [  # (key in the row, header, format)
    ("run", "run", "s"), ("overrides", "overrides", "s"), ("rec", "rec", ".2f"),
    ("kl", "KL", ".2f"), ("neg_elbo", "-ELBO", ".2f"), ("nll_iw", "IW-NLL", ".2f"),
    ("ppl_iw", "IW-PPL", ".1f"), ("nll", "NLL (exact)", ".2f"), ("ppl", "PPL (exact)", ".1f"),
    ("mi", "MI", ".2f"), ("au", "AU", "d"), ("iw_samples", "K", "d"), ("epochs", "epochs", "d"),
    ("train_minutes", "train min", ".1f"), ("status", "status", "s"),
]


def find_runs(roots: list[Path]) -> list[Path]:
    runs = []
    for root in roots:
        if (root / "config.yaml").is_file():
            runs.append(root)
        else:
            runs.extend(sorted(p.parent for p in root.rglob("config.yaml") if ".hydra" not in p.parts))
    return runs


def overrides_of(run: Path) -> str:
    path = run / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return ""
    lines = [line[2:].strip() for line in path.read_text().splitlines() if line.startswith("- ")]
    return " ".join(o for o in lines if not o.startswith(("data.dir", "data.cache_dir", "hydra.")))


def row_of(run: Path, root: Path) -> dict:
    row = {"run": str(run.relative_to(root)) if run != root and root in run.parents else run.name,
           "overrides": overrides_of(run)}
    results, test = run / "results.json", run / "eval_test.json"
    if results.is_file() and test.is_file():
        res = json.loads(results.read_text())
        row.update({k: v for k, v in json.loads(test.read_text()).items()
                    if isinstance(v, (int, float))})
        row.update(epochs=res["epochs"], train_minutes=res["train_seconds"] / 60, status="done")
    else:
        metrics = run / "metrics.jsonl"
        lines = metrics.read_text().splitlines() if metrics.is_file() else []
        last = json.loads(lines[-1]) if lines else {}
        row["status"] = f"not finished (last step {last.get('step', 0)})"
    return row


def markdown(rows: list[dict]) -> str:
    cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |",
             "|" + "|".join("---" if f == "s" else "---:" for _, _, f in cols) + "|"]
    for r in rows:
        cells = [format(r[k], f) if k in r else "–" for k, _, f in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tabulate vae_text runs (markdown + CSV).")
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep directories")
    parser.add_argument("--out", type=Path, help="output path without suffix")
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
    out = args.out or args.dirs[0] / "report"
    out.parent.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    out.with_suffix(".md").write_text(table + "\n")
    keys = [k for k, _, _ in COLUMNS if any(k in r for r in rows)]
    with out.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print(table)
    for r in rows:
        if r["status"] != "done":
            print(f"note: {r['run']} is {r['status']}: running, stopped or failed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
