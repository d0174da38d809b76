"""End-to-end runs on the real PTB files (CI links them into data/ptb)."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, corpus_dir, tiny_overrides  # noqa: F401  (fixture)


@pytest.mark.slow
def test_smoke_experiment_on_real_ptb(ptb_dir, ptb_cache, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "vae_text.train", "+experiment=smoke", f"data.dir={ptb_dir}",
         f"data.cache_dir={ptb_cache}", f"hydra.run.dir={tmp_path}/run", "train.num_threads=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["test"]["sentences"] == 400
    assert results["test"]["rec"] < 200  # a 10k-way uniform guess would be 23 * 9.2 = 212 nats


@pytest.mark.slow
def test_benchmark_script_prints_its_figures(corpus_dir, tmp_path):  # noqa: F811
    overrides = [o for o in tiny_overrides(corpus_dir) if not o.startswith("train.progress")]
    proc = subprocess.run(
        [sys.executable, "scripts/benchmark.py", *overrides, "--steps", "4", "--warmup", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    figures = dict(line.split(":", 1) for line in proc.stdout.splitlines() if ":" in line)
    assert float(figures["train tokens/s"].replace(",", "")) > 0
    assert figures["peak RSS"].strip().endswith("MiB")
    ratio = figures["project / bare"].split("x")[0]  # the bare reference step ran beside it
    assert float(ratio) > 0
