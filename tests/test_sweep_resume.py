"""Sweeps you can extend, resume and survive: real `python -m vae_text.train -m` runs."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, tiny_overrides
from vae_text.report import main as report
from vae_text.run.sweep import job_dirname, keep_launch_config


def sweep_cmd(corpus_dir, sweep, *extra):
    return [sys.executable, "-m", "vae_text.train", "-m",
            *tiny_overrides(corpus_dir, "train.max_steps=6", "eval.iw_samples=2",
                            "eval.reconstruct=false"), f"hydra.sweep.dir={sweep}", *extra]


def run(cmd):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_job_dirname_is_safe_in_a_shell_and_an_override():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert job_dirname(["objective.kl_weight=0.25", "model.latent_size=16"]) == \
        "model.latent_size-16+objective.kl_weight-0.25"
    assert job_dirname(["+experiment=ptb", "objective.kl_weight=-1"], ["experiment"]) == \
        "objective.kl_weight--1"
    assert job_dirname(["objective/schedule=cyclical"]) == "objective.schedule-cyclical"
    odd = job_dirname(["logger.tags=[a,b]", "logger.run_name='x y'"])
    other = job_dirname(["logger.tags=[a,c]", "logger.run_name='x y'"])
    assert odd != other and all(c.isalnum() or c in "._+-" for c in odd)
    trial = job_dirname(["objective.kl_weight=0.30138168803582194", "optim.lr=0.00207614104200153"])
    assert trial.startswith("objective.kl_weight-0.3014+optim.lr-0.002076.") and len(trial) == 44 + 1 + 8
    assert trial != job_dirname(["objective.kl_weight=0.30138168803582195", "optim.lr=0.00207614104200153"])
    assert job_dirname([]) == "default" and len(job_dirname([f"k{i}={'v' * 40}" for i in range(9)])) < 210
    parsed = OverridesParser.create().parse_override(f"train.resume=multirun/x/{odd}")
    assert parsed.value() == f"multirun/x/{odd}"  # one value, not a sweep over a comma


@pytest.mark.slow
def test_an_earlier_launch_config_never_replaces_a_kept_one(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    assert keep_launch_config(sweep) is None  # a first launch: nothing to keep
    (sweep / "multirun.yaml").write_text("first")
    assert keep_launch_config(sweep) == sweep / ".multirun" / "multirun.0.yaml"
    (sweep / ".multirun" / "multirun.0.yaml").unlink()  # a user tidied up: 1 is kept, 0 is gone
    (sweep / ".multirun" / "multirun.1.yaml").write_text("second")
    (sweep / "multirun.yaml").write_text("third")
    assert keep_launch_config(sweep) == sweep / ".multirun" / "multirun.2.yaml"
    assert (sweep / ".multirun" / "multirun.1.yaml").read_text() == "second"
    assert (sweep / ".multirun" / "multirun.2.yaml").read_text() == "third"
    assert not (sweep / "multirun.yaml").exists()


def test_sweep_extends_resumes_and_survives_a_failing_job(corpus_dir, tmp_path):
    sweep = tmp_path / "sweep"
    # one bad value: the good job still runs; the bad one leaves its error in its folder
    first = run(sweep_cmd(corpus_dir, sweep, "objective.kl_weight=-1,0.5"))
    assert first.returncode == 1, first.stderr
    bad, good = sweep / "objective.kl_weight--1", sweep / "objective.kl_weight-0.5"  # constants name none
    assert "objective.kl_weight=-1.0 is invalid" in (bad / "error.txt").read_text()
    assert f"  failed: {bad.name}: objective.kl_weight=-1.0 is invalid" in first.stderr
    assert (good / "results.json").is_file() and not (good / "error.txt").exists()
    done = json.loads((good / "results.json").read_text())
    # an interrupted job: its results and test evaluation gone, its last.pt kept
    (good / "results.json").unlink()
    (good / "eval_test.json").unlink()
    second = run(sweep_cmd(corpus_dir, sweep, "objective.kl_weight=0.5,1.0"))
    assert second.returncode == 0  # its own jobs succeeded; the first launch's failure is named as earlier
    assert f"failed in an earlier launch (not counted here): {bad.name}" in second.stderr
    log = second.stdout + second.stderr
    assert f"resuming {good.name} from its checkpoints/last.pt" in log
    assert "at step 6 (epoch 0)" in log  # the trainer restored last.pt rather than starting over
    finished = sweep / "objective.kl_weight-1.0"
    again = json.loads((good / "results.json").read_text())
    assert again["steps"] == done["steps"] == 6
    assert again["test"]["neg_elbo"] == pytest.approx(done["test"]["neg_elbo"])
    assert (finished / "results.json").is_file()
    # the resumed job keeps the first piece's .hydra/ and records each piece
    assert (good / ".hydra" / "overrides.yaml").is_file()
    assert (good / ".hydra" / "earlier" / "1" / "overrides.yaml").is_file()
    assert len(json.loads((good / "job.json").read_text())["pieces"]) == 2
    # a third launch: everything finished is skipped, with the stored score
    mtime = (finished / "results.json").stat().st_mtime_ns
    third = run(sweep_cmd(corpus_dir, sweep, "objective.kl_weight=1.0"))
    assert third.returncode == 0
    log = third.stdout + third.stderr
    assert f"skipped {finished.name}: finished already" in log
    assert (finished / "results.json").stat().st_mtime_ns == mtime
    # every launch's multirun.yaml is kept
    kept = sorted(p.name for p in (sweep / ".multirun").glob("multirun.*"))
    assert kept == ["multirun.0.yaml", "multirun.1.yaml"]
    assert "objective.kl_weight=-1,0.5" in (sweep / ".multirun" / "multirun.0.yaml").read_text()
    assert "objective.kl_weight=1.0" in (sweep / "multirun.yaml").read_text()
    # the report lists the failed job with its error
    assert report([str(sweep), "--out", str(tmp_path / "rep")]) == 0
    table = (tmp_path / "rep.md").read_text()
    assert "failed: objective.kl_weight=-1.0 is invalid" in table
    assert table.count("done (step cap)") == 2
