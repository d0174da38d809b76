"""A real sweep: Hydra multirun with the joblib launcher, then the report over its jobs."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, compose_cfg, tiny_overrides
from vae_text.report import main as report


@pytest.mark.slow
def test_joblib_sweep_and_its_report(corpus_dir, tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "vae_text.train", "-m", *tiny_overrides(corpus_dir, "train.max_steps=8",
                                                                       "eval.iw_samples=3"),
         "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "objective.kl_weight=0.25,1.0",
         "logger=wandb", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                                     "WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stderr
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and (p / "config.yaml").is_file())
    assert len(jobs) == 2
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert report([str(sweep), "--out", str(tmp_path / "rep"), "--wandb"]) == 0
    rows = {r["beta"]: r for r in csv.DictReader((tmp_path / "rep.csv").open())}
    assert set(rows) == {"0.25", "1.0"}
    for job in jobs:
        expected = json.loads((job / "eval_test.json").read_text())
        row = next(r for r in rows.values() if r["run"] == job.name)
        assert float(row["neg_elbo"]) == expected["neg_elbo"]
        assert float(row["nll_iw"]) == expected["nll_iw"]
        # each job's wandb run: grouped by the sweep, named after its overrides
        import wandb_history

        assert any("val/neg_elbo" in h for h in wandb_history.read(job))
        info = wandb_history.run_info(job)
        assert info["name"] == job.name and info["group"] == f"{tmp_path.name}/sweep"
    assert (tmp_path / "rep_rate_distortion.png").stat().st_size > 5000
    table = (tmp_path / "rep.md").read_text().splitlines()
    assert table[0].startswith("Overrides common to every run: `") and "train.max_steps=8" in table[0]
    rows = [line for line in table[4:] if line.startswith("| ")]  # a footnote may follow the rows
    assert [line.split(" | ")[1] for line in rows] == ["objective.kl_weight=0.25", "objective.kl_weight=1.0"]
    # the report's own wandb run holds its three figures as images
    (report_run,) = sweep.glob("wandb/offline-run-*")
    images = sorted(p.name.split("_")[0] for p in report_run.glob("files/media/images/report/*.png"))
    assert images == ["curves", "rate", "validation"]


def test_kl_sweep_experiment_and_slurm_launcher_compose():
    from hydra import compose, initialize_config_dir

    from conftest import CONF

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", overrides=["+experiment=ptb_kl_sweep", "hydra/launcher=slurm"],
                      return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.hydra.sweeper.params["objective.kl_weight"] == "0,0.1,0.25,0.5,0.75,1.0"
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.cpus_per_task, launcher.timeout_min) == (1, 8, 240)
    assert compose_cfg(["+experiment=ptb_kl_sweep"]).model.latent_size == 32


DEVICE = os.environ.get("VAE_TEXT_CUDA_TESTS_DEVICE", "cuda")  # tests/test_cuda.py's switch


@pytest.mark.cuda
@pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                    reason="CUDA is not available here (VAE_TEXT_CUDA_TESTS_DEVICE=cpu runs this on the CPU)")
def test_joblib_runs_seeds_side_by_side_on_one_device(corpus_dir, tmp_path):
    sweep = tmp_path / "seeds"
    proc = subprocess.run(
        [sys.executable, "-m", "vae_text.train", "-m", *tiny_overrides(corpus_dir, "train.max_steps=6",
                                                                       "eval.iw_samples=3"),
         "hydra/launcher=joblib", "hydra.launcher.n_jobs=3", "seed=1,2,3", f"device={DEVICE}",
         f"hydra.sweep.dir={sweep}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and (p / "config.yaml").is_file())
    assert [j.name for j in jobs] == ["seed-1", "seed-2", "seed-3"]  # constant overrides name none
    for job in jobs:  # each trained and tested on the one device
        assert f"| device {DEVICE}" in (job / "train.log").read_text()
    nll = {json.loads((job / "eval_test.json").read_text())["nll_iw"] for job in jobs}
    assert len(nll) == 3  # three seeds: three models
