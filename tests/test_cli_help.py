"""--help of every entry point: its own keys with the config comments; train lists experiments."""
import os
import subprocess
import sys

import pytest

from conftest import CONF, ROOT


def cli(module, *args):
    return subprocess.run([sys.executable, "-m", f"vae_text.{module}", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.slow
def test_help_lists_each_commands_own_keys():
    train = cli("train", "--help")
    assert train.returncode == 0, train.stderr
    out = train.stdout
    assert "train.num_threads=None  # torch CPU threads; null: the physical cores" in out
    assert "objective.kl_weight=1.0  # beta" in out
    experiments = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
    listed = [line.split(":")[0].strip() for line in out.split("Experiments:")[1].splitlines() if line.strip().startswith("+")]
    assert listed[: len(experiments)] == [f"+experiment={e}" for e in experiments]
    assert "+experiment=smoke: A tiny run that finishes in seconds" in out
    evaluate = cli("evaluate", "--help").stdout
    assert "max_sentences=None  # a quick look" in evaluate and "iw_samples=500  # K of" in evaluate
    keys = [line.split("=")[0].strip() for line in evaluate.splitlines() if "=" in line]
    assert "train.epochs" not in evaluate and "Experiments" not in evaluate
    assert "decoding" not in keys and "gen.decoding" in keys  # sample's key; the suite's own
    sample = cli("sample", "-h").stdout
    assert "decoding='greedy'  # the strategy" in sample and "num_threads=None" in sample
    assert "iw_samples" not in sample and "train.epochs" not in sample


@pytest.mark.slow
def test_missing_checkpoint_is_one_line():
    for module in ("evaluate", "sample"):
        proc = cli(module)
        assert proc.returncode == 2
        assert proc.stderr.strip() == ("error: checkpoint= is missing: give a run directory, a "
                                       "checkpoint file or an export folder (checkpoint=outputs/<date>/<time>)")
