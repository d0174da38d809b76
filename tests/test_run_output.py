"""A run that tells you what it does: train.log with the bar on, short validation lines, a
closing summary, the wandb sync command."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, tiny_overrides


@pytest.mark.slow
def test_train_log_summary_and_wandb_hint(corpus_dir, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "vae_text.train",
         *tiny_overrides(corpus_dir, "train.progress=true", "eval.iw_samples=2", "logger=wandb"),
         f"hydra.run.dir={run}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stderr
    log = (run / "train.log").read_text()
    train_lines = [line for line in log.splitlines() if "train/rec=" in line]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "train/rec" in r]
    assert len(train_lines) == len(logged) == 36 // 5  # 2 epochs of 18 batches, a line every 5 steps
    # ... in the file, not on the console the bar holds
    assert "train/rec=" not in proc.stdout + proc.stderr
    for r in logged:  # per-token rec: the window's nats over its tokens
        assert 0 < r["train/rec_per_token"] < r["train/rec"]
    val_lines = [line for line in log.splitlines() if "val/rec=" in line]
    assert len(val_lines) == 2
    assert "val/sentences=30" in val_lines[0] and "val/tokens=" in val_lines[0]
    assert "sentences" not in val_lines[1] and "au_threshold" not in val_lines[1]
    results = json.loads((run / "results.json").read_text())
    best = re.search(r"best validation neg_elbo: (\S+)", log).group(1)
    assert float(best) == float(f"{results['best_val_neg_elbo']:.4g}")
    assert f"files: {run}/ checkpoints/best.pt" in log and "wall time" in log
    iw = re.search(r"IW-NLL (\S+),", log).group(1)
    assert float(iw) == float(f"{results['test']['nll_iw']:.4g}")
    hint = re.search(r"upload it with: wandb sync (\S+)", log).group(1)
    assert (run / "wandb").is_dir() and hint.startswith(str(run / "wandb" / "offline-run-"))
    assert os.path.isdir(hint)


def test_default_threads_follow_the_cpus_the_process_may_use():
    code = ("import os, torch; from vae_text.core.utils import default_threads; "
            "os.sched_setaffinity(0, {0}); print(default_threads())")
    one = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert one.stdout.strip() == "1", one.stderr
    from vae_text.core.utils import default_threads

    assert 1 <= default_threads() <= len(os.sched_getaffinity(0))
