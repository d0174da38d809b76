"""Fault injection through the real CLI: SIGKILL at chosen points then resume, two runs on one
folder, a diverging run, unwritable outputs, a file size limit. Real processes, real signals."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, compose_cfg, folder_record, tiny_overrides
from vae_text.run.checkpoint import load_checkpoint
from vae_text.train import train

TIMING = ("seconds", "tokens_per_s", "_gflops")  # wall-clock values: the only keys two runs may differ in


def cli_overrides(corpus_dir: Path, *extra: str) -> list[str]:
    # checkpoints every 4 steps (a kill loses up to 3), 2 epochs of 18 batches, a test evaluation
    # long enough (K = 150) to be killed in
    return tiny_overrides(corpus_dir, "train.checkpoint_every=4", "eval.iw_samples=150", *extra)


def start(module: str, args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=kw.pop("cwd", ROOT), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def run_cli(module: str, args: list[str], **kw) -> subprocess.CompletedProcess:
    p = start(module, args, **kw)
    out, err = p.communicate(timeout=300)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def one_line_error(proc, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def kill_when(proc: subprocess.Popen, ready, timeout: float = 240) -> None:
    """SIGKILL `proc` as soon as `ready()` holds (polled as fast as Python can)."""
    end = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended before the kill point: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < end, "the kill point never came"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def records(run: Path) -> list[dict]:
    """metrics.jsonl without its wall-clock values (every line must be valid JSON)."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.endswith(TIMING)} for line in lines]


@pytest.mark.slow
def test_sigkill_mid_step_during_a_checkpoint_write_and_in_the_test_then_resume_is_exact(
        corpus_dir, tmp_path):
    over = cli_overrides(corpus_dir)
    ref = tmp_path / "ref"
    train(compose_cfg(over), ref)  # the uninterrupted run
    run = tmp_path / "run"
    args = [*over, f"hydra.run.dir={run}"]
    resume = [*args, f"train.resume={run}"]
    metrics, ckpt = run / "metrics.jsonl", run / "checkpoints"

    # 1. mid-step: after the 2nd train line (step 10; last checkpoint at step 8)
    p = start("vae_text.train", args)
    kill_when(p, lambda: metrics.exists() and metrics.read_text().count("train/loss") >= 2)
    killed_at = len(metrics.read_text().splitlines())
    # 2. during a checkpoint write: its temporary file exists, last.pt is the previous one
    p = start("vae_text.train", resume)
    writing = lambda: list(ckpt.glob(f".last.pt.{p.pid}.*.tmp"))  # noqa: E731 (utils.atomic_write's name)
    kill_when(p, lambda: bool(writing()))
    assert writing()  # the kill left it; the next start removes it
    # 3. during the test evaluation: the last validation is logged, results.json is not written
    p = start("vae_text.train", resume)
    kill_when(p, lambda: metrics.exists() and any(
        '"val/' in line and '"epoch": 2' in line for line in metrics.read_text().splitlines()))
    assert not (run / "results.json").exists()
    # 4. resumed to the end
    done = run_cli("vae_text.train", resume)
    assert done.returncode == 0, done.stderr[-2000:]

    assert killed_at > 0 and not list(run.rglob("*.tmp*"))
    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(ref, name), load_checkpoint(run, name)
        assert a["state"]["step"] == b["state"]["step"] == 2 * 18
        for key, value in a["model"].items():
            assert torch.equal(value, b["model"][key]), (name, key)
    assert records(run) == records(ref)  # each step once, with the uninterrupted run's values
    got, want = (json.loads((d / "results.json").read_text())["test"] for d in (run, ref))
    assert {k: v for k, v in got.items() if not k.endswith(TIMING)} == \
        {k: v for k, v in want.items() if not k.endswith(TIMING)}


@pytest.mark.slow
def test_two_runs_on_one_folder_one_is_refused_and_the_folder_is_one_run(corpus_dir, tmp_path):
    run = tmp_path / "run"
    procs = [start("vae_text.train", [*tiny_overrides(corpus_dir, f"seed={s}"), f"hydra.run.dir={run}"])
             for s in (1, 2)]
    done = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [e[-1500:] for _, e in done]
    loser = next(subprocess.CompletedProcess(p.args, p.returncode, o, e)
                 for p, (o, e) in zip(procs, done) if p.returncode == 2)
    line = one_line_error(loser, str(run))
    assert "in use by another run (pid" in line or "already holds a run" in line
    seed = load_checkpoint(run, "last.pt")["config"]["seed"]
    assert f"seed: {seed}" in (run / "config.yaml").read_text()
    assert f"seed={seed}" in (run / ".hydra" / "overrides.yaml").read_text().replace("- ", "")
    steps = [r["step"] for r in records(run) if "train/loss" in r]
    assert steps == sorted(set(steps))  # one run's lines, not two interleaved


@pytest.mark.slow
def test_a_diverging_run_stops_naming_the_step_and_keeps_its_last_good_checkpoint(
        corpus_dir, tmp_path):
    run = tmp_path / "run"
    p = run_cli("vae_text.train", [*tiny_overrides(corpus_dir, "optim.lr=1e3", "train.checkpoint_every=1"),
                                   f"hydra.run.dir={run}"])
    one_line_error(p, "training diverged at step 2", "checkpoints/last.pt keeps the last good weights (step 1)")
    blob = load_checkpoint(run, "last.pt")
    assert blob["state"]["step"] == 1
    assert all(torch.isfinite(v).all() for v in blob["model"].values() if v.is_floating_point())
    assert not (run / "results.json").exists()
    records(run)  # valid JSON throughout


def test_overflowing_metrics_are_valid_json_and_a_gradient_blow_up_stops(corpus_dir, tmp_path):
    from vae_text.core.utils import write_json
    from vae_text.metrics import _exp
    from vae_text.run.divergence import TrainingDiverged

    assert _exp(800.0) == float("inf") and _exp(2.0) == pytest.approx(7.389056)
    write_json(tmp_path / "m.json", {"ppl": _exp(800.0), "nan": float("nan")})
    assert json.loads((tmp_path / "m.json").read_text()) == {"ppl": None, "nan": None}
    with pytest.raises(TrainingDiverged, match="at step .*: the (loss|gradient norm) is (nan|inf)"):
        train(compose_cfg(tiny_overrides(corpus_dir, "optim.lr=5", "optim.clip_norm=null")),
              tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_a_refused_command_changes_nothing_and_a_rejected_config_makes_no_folder(corpus_dir, tmp_path):
    run = tmp_path / "run"
    train(compose_cfg(tiny_overrides(corpus_dir, "train.max_steps=3")), run)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text("- train.max_steps=3\n")
    before = folder_record(run)
    p = run_cli("vae_text.train", [*tiny_overrides(corpus_dir, "model.latent_size=4"), f"hydra.run.dir={run}"])
    one_line_error(p, "already holds a run")
    assert folder_record(run) == before
    # a bad value, and data that is missing: nothing is left under outputs/
    out = tmp_path / "outputs"
    p = run_cli("vae_text.train", [*tiny_overrides(corpus_dir, "objective.schedule.warmup_steps=nan"),
                                   f"hydra.run.dir={out}/a/b"])
    one_line_error(p, "objective.schedule.warmup_steps=nan")
    p = run_cli("vae_text.train", [*tiny_overrides(tmp_path / "no_data"), f"hydra.run.dir={out}/a/b"])
    one_line_error(p, "no_data")
    assert not out.exists()


@pytest.mark.slow
def test_unwritable_run_and_output_paths_fail_first_in_one_line(corpus_dir, tmp_path):
    # a fault root hits too: a file where a folder should be
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    p = run_cli("vae_text.train", [*tiny_overrides(corpus_dir), f"hydra.run.dir={blocker}/run"])
    one_line_error(p, str(blocker), "not a folder")
    run = tmp_path / "run"
    train(compose_cfg(tiny_overrides(corpus_dir, "train.max_steps=2", "eval.iw_samples=0")), run)
    began = time.monotonic()
    p = run_cli("vae_text.evaluate", [f"checkpoint={run}", f"output={blocker}/x.json",
                                      "iw_samples=2000"])  # minutes of work if it started
    one_line_error(p, str(blocker), "not a folder")
    assert time.monotonic() - began < 60
    # a missing folder is made
    from vae_text.config import EvaluateConfig
    from vae_text.evaluate import run as evaluate_run

    evaluate_run(EvaluateConfig(checkpoint=str(run), output=str(tmp_path / "new" / "x.json"),
                                iw_samples=2, progress=False, device="cpu"))
    assert json.loads((tmp_path / "new" / "x.json").read_text())["split"] == "test"


@pytest.mark.slow
def test_a_write_that_fails_mid_run_names_the_file_and_the_cause_and_leaves_no_temp_file(
        corpus_dir, tmp_path):
    run = tmp_path / "run"

    def small_files():  # a 40 KiB file size limit: metrics and JSON fit, a checkpoint does not
        resource.setrlimit(resource.RLIMIT_FSIZE, (40 * 1024, resource.RLIM_INFINITY))

    p = start("vae_text.train", [*tiny_overrides(corpus_dir), f"hydra.run.dir={run}"],
              preexec_fn=small_files)
    out, err = p.communicate(timeout=300)
    proc = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    line = one_line_error(proc, str(run / "checkpoints"), "(file too large)")
    assert line.split(": cannot write it")[0].endswith((".pt", "/checkpoints")), line
    assert not list(run.rglob("*.tmp*")) and not list(run.rglob(".write_probe*"))


def test_resume_refuses_optimizer_overrides_and_a_restart_starts_metrics_afresh(corpus_dir, tmp_path):
    from vae_text.core.errors import CheckpointError

    run = tmp_path / "run"
    train(compose_cfg(tiny_overrides(corpus_dir, "train.max_steps=3")), run)
    with pytest.raises(CheckpointError, match=r"optim.lr is 0.001 in the checkpoint but 1000.0 now"):
        train(compose_cfg(tiny_overrides(corpus_dir, "optim.lr=1e3", "train.max_steps=6",
                                         f"train.resume={run}")), run)
    # a run killed before its first checkpoint, started again in its folder: a fresh metrics.jsonl
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "metrics.jsonl").write_text('{"step": 99, "train/loss": 1.0}\n{"step": 100, "tr')
    train(compose_cfg(tiny_overrides(corpus_dir, "train.max_steps=5")), fresh)
    assert [r["step"] for r in records(fresh)][0] == 5 and all(r["step"] <= 5 for r in records(fresh))
