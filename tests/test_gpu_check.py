"""scripts/gpu_check.sh in its CPU dry-run mode: every step on the smoke sizes, every log in one
folder, the figures printed with the machine's name; and its wall-time guard."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, write_corpus

SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def gpu_check(tmp_path, *args, **env):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                                           "PYTHON": sys.executable, **env})


@pytest.mark.slow
def test_the_dry_run_runs_every_step_and_prints_its_figures(tmp_path):
    corpus, logs = write_corpus(tmp_path / "corpus"), tmp_path / "logs"
    proc = gpu_check(tmp_path, "--dry-run", str(logs), DATA_DIR=str(corpus), COMPILE_MODES="")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {p.name for p in logs.glob("*.log")} == {
        "nvidia-smi.log", "cuda_tests.log", "bench_ptb_eager.log", "bench_256_eager.log", "ptb_run.log"}
    figures = (logs / "figures.txt").read_text()
    assert proc.stdout.endswith(figures) and figures.startswith("machine: dry run on ")
    for step in ("cuda_tests", "bench_ptb_eager", "bench_256_eager", "ptb_run"):
        assert f"\n{step}: rc=0 in " in figures, step
    assert "test_cuda_eval.py::test_the_device_evaluation_gives_the_cpu_numbers" in \
        (logs / "cuda_tests.log").read_text()
    for size in ("ptb", "256"):
        assert f"bench {size} eager | train tokens/s: " in figures
    test = json.loads((logs / "ptb_run" / "eval_test.json").read_text())
    assert test["iw_samples"] == 12
    for key in ("nll_iw", "readout_gflops", "matmul_bound_gflops"):
        assert f"ptb run test | {key}: {test[key]:.4g}\n" in figures, key


def test_the_guard_runs_nothing_once_the_budget_is_spent(tmp_path):
    corpus, logs = write_corpus(tmp_path / "corpus"), tmp_path / "logs"
    proc = gpu_check(tmp_path, "--dry-run", str(logs), DATA_DIR=str(corpus), BUDGET_S="4",
                     COMPILE_MODES="compile")
    assert proc.returncode == 1
    figures = (logs / "figures.txt").read_text()
    for step in ("cuda_tests", "bench_ptb_eager", "bench_ptb_compile", "bench_256_compile", "ptb_run"):
        assert f"\n{step}: " in figures, step
    # the first step gets the 4 s left at most; none after it starts
    assert figures.count("the 4 s budget is spent") >= 4


def test_the_dry_run_needs_a_corpus(tmp_path):
    proc = gpu_check(tmp_path, "--dry-run", str(tmp_path / "logs"), DATA_DIR="")
    assert proc.returncode == 2 and "--dry-run needs DATA_DIR=" in proc.stderr
