"""A sweep job is what it computed: relaunches on other data, devices, and beside another launch."""

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONF, ROOT, folder_record, tiny_overrides, write_corpus
from vae_text.run.sweep import _name_exclusions, job_dirname
from vae_text.run.sweepjob import differences


def sweep_cmd(corpus_dir, sweep, *extra):
    return [sys.executable, "-m", "vae_text.train", "-m",
            *tiny_overrides(corpus_dir, "train.max_steps=6", "eval.iw_samples=2",
                            "eval.reconstruct=false"), f"hydra.sweep.dir={sweep}", *extra]


def run(cmd):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})


def job_bytes(sweep: Path) -> dict:
    """Every file of every job folder: its bytes' hash and its modification time."""
    return {f"{job.name}/{name}": entry for job in sorted(sweep.iterdir())
            if job.is_dir() and not job.name.startswith(".")
            for name, entry in folder_record(job, mtimes=True).items()}


def compose_cfg_hydra():
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("train", return_hydra_config=True)


def exclusions(tmp_path, task, params=None):
    listed = compose_cfg_hydra().hydra.job.config.override_dirname.exclude_keys
    config = OmegaConf.create({"hydra": {"overrides": {"task": task}, "sweeper": {"params": params},
                                         "job": {"config": {"override_dirname": {"exclude_keys": listed}}}}})
    return _name_exclusions(config, tmp_path)


def test_job_folders_are_named_after_what_varies(tmp_path):
    first = exclusions(tmp_path, ["+experiment=ptb", "seed=3", "data.dir=/x", "objective.kl_weight=0.25,0.5"])
    assert "seed" in first and "data.dir" in first and "objective.kl_weight" not in first
    # a later launch: one value is a job name as before; a changed constant names its jobs
    later = exclusions(tmp_path, ["+experiment=ptb", "seed=4", "data.dir=/y", "objective.kl_weight=1.0"])
    assert "seed" not in later and "objective.kl_weight" not in later and "data.dir" in later
    # where the data lies or how a job runs names a job only when a launch sweeps it
    assert "device" not in exclusions(tmp_path, ["device=cpu,cuda"])
    assert "experiment" not in exclusions(tmp_path, ["+experiment=smoke,ptb"])
    # an Optuna search: its sampled parameters name the trial folders, nothing else does
    optuna = exclusions(tmp_path / "optuna", ["+experiment=ptb", "train.max_steps=5", "model.latent_size=6"],
                        {"optim.lr": "tag(log, interval(1e-4, 3e-3))", "objective.kl_weight": "interval(0.1, 1.0)"})
    assert {"experiment", "train.max_steps", "model.latent_size"} <= set(optuna)
    assert not {"optim.lr", "objective.kl_weight"} & set(optuna)
    trial = job_dirname(["+experiment=ptb", "train.max_steps=5", "model.latent_size=6",
                         "objective.kl_weight=0.30138168803582194", "optim.lr=0.00207614104200153"], optuna)
    assert trial.startswith("objective.kl_weight-0.3014+optim.lr-0.002076.") and len(trial) == 53


def test_identity_differences_name_the_keys():
    old = {"config": {"seed": 1, "model": {"latent_size": 6}}, "data": {"train": {"sha256": "a", "size": 3}}}
    new = {"config": {"seed": 1, "model": {"latent_size": 8}}, "data": {"train": {"sha256": "b", "size": 4}}}
    assert differences(old, new) == ["config.model.latent_size", "data.train.sha256", "data.train.size"]


def test_a_sweep_dir_that_is_a_file_gives_one_line(corpus_dir, tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder\n")
    proc = run(sweep_cmd(corpus_dir, target, "objective.kl_weight=0.5,1.0"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: hydra.sweep.dir={target} is a file, not a folder: choose another hydra.sweep.dir"]
    assert target.read_text() == "not a folder\n"


@pytest.mark.slow
def test_relaunch_skips_only_the_same_job(corpus_dir, tmp_path):
    sweep = tmp_path / "sweep"
    first = run(sweep_cmd(corpus_dir, sweep, "objective.kl_weight=0.5,1.0"))
    assert first.returncode == 0, first.stderr
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["objective.kl_weight-0.5", "objective.kl_weight-1.0"]  # constants name no folder
    before = job_bytes(sweep)
    # the same files in another folder, another device and thread count: the same jobs
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in corpus_dir.glob("*.txt"):
        shutil.copy(f, copy / f.name)
    same = run(sweep_cmd(copy, sweep, "objective.kl_weight=0.5,1.0", "device=cpu", "train.num_threads=2"))
    assert same.returncode == 0, same.stderr
    assert (same.stdout + same.stderr).count("finished already") == 2
    assert job_bytes(sweep) == before
    # other files under another data.dir: refused, named, nothing of the finished jobs changed
    other = write_corpus(tmp_path / "other", sizes=(121, 30, 37))
    refused = run(sweep_cmd(other, sweep, "objective.kl_weight=0.5,1.0"))
    assert refused.returncode == 1
    line = (f"{sweep}/objective.kl_weight-0.5 holds a finished job of other settings (the train "
            f"split's contents differ): it is left as it is and its score not reused; launch into "
            f"another hydra.sweep.dir, or remove that folder to run the job again")
    assert f"  refused: objective.kl_weight-0.5: {line}" in refused.stderr.splitlines()
    assert "finished already" not in refused.stdout + refused.stderr
    assert job_bytes(sweep) == before


@pytest.mark.slow
def test_a_launch_answers_for_its_own_jobs_only(corpus_dir, tmp_path):
    sweep = tmp_path / "sweep"
    first = run(sweep_cmd(corpus_dir, sweep, "objective.kl_weight=-1,0.5"))
    assert first.returncode == 1 and "  failed: objective.kl_weight--1: " in first.stderr
    running = sweep / "objective.kl_weight-0.5"
    (running / "results.json").unlink()  # as if the first launch were still running it
    before = job_bytes(sweep)
    fd = os.open(running / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        second = run(sweep_cmd(corpus_dir, sweep, "objective.kl_weight=0.5,1.0"))
    finally:
        os.close(fd)
    # the job another launch holds is refused and left exactly as it was: no error.txt, no .hydra/
    assert second.returncode == 1
    assert f"  refused: objective.kl_weight-0.5: {running} is in use by another run" in second.stderr
    assert {k: v for k, v in job_bytes(sweep).items() if k.startswith(running.name)} == \
        {k: v for k, v in before.items() if k.startswith(running.name)}
    assert "failed in an earlier launch (not counted here): objective.kl_weight--1" in second.stderr
    # a launch whose own jobs all succeed exits 0, whatever earlier launches left
    third = run(sweep_cmd(corpus_dir, sweep, "objective.kl_weight=1.0"))
    assert third.returncode == 0, third.stderr
    assert f"sweep {sweep}: 1 skipped" in third.stderr
    assert (sweep / "objective.kl_weight-1.0" / "job.json").is_file()


def test_the_data_fingerprint_of_a_datasets_corpus_covers_each_local_file(tmp_path):
    from conftest import compose_cfg
    from vae_text.run.sweepjob import data_fingerprint

    for name, text in (("a.txt", "the cat\n"), ("b.txt", "a dog\n"), ("c.txt", "the bird sees\n")):
        (tmp_path / name).write_text(text)
    a, b, c = (str(tmp_path / n) for n in ("a.txt", "b.txt", "c.txt"))
    cfg = compose_cfg(["data=hf", "data.name=text", f"data.data_files.train=[{a},{b}]",
                       f"data.data_files.valid={b}", f"data.data_files.test={c}"])
    digest = {n: {"size": len(t.encode()), "sha256": hashlib.sha256(t.encode()).hexdigest()}
              for n, t in (("a", "the cat\n"), ("b", "a dog\n"), ("c", "the bird sees\n"))}
    assert data_fingerprint(cfg) == {"train": [digest["a"], digest["b"]], "valid": [digest["b"]],
                                     "test": [digest["c"]]}
