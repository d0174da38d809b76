"""hparams_search=ptb_optuna: a real Optuna search (hydra-optuna-sweeper) and its report."""

import csv
import os
import re
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, compose_cfg, tiny_overrides
from vae_text.report import main as report


def test_ptb_optuna_composes():
    from hydra import compose, initialize_config_dir

    from conftest import CONF

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", overrides=["hparams_search=ptb_optuna", "+experiment=ptb"],
                      return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.vae_text_search.OptunaSearchSweeper"
    assert cfg.hydra.callbacks.sweep.fail_on_error is False  # the search judges its own failures
    assert set(cfg.hydra.sweeper.params) == {"objective.kl_weight", "objective.free_bits",
                                             "model.word_dropout", "optim.lr"}
    assert cfg.train == compose_cfg(["+experiment=ptb"]).train  # the search changes only the sweeper


@pytest.mark.slow
def test_optuna_search_runs_and_the_report_plots_it(corpus_dir, tmp_path):
    sweep = tmp_path / "optuna"
    proc = subprocess.run(
        [sys.executable, "-m", "vae_text.train", "hparams_search=ptb_optuna",
         *tiny_overrides(corpus_dir, "train.max_steps=5", "eval.iw_samples=2", "eval.reconstruct=false"),
         "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    jobs = sorted(p for p in sweep.iterdir() if (p / "results.json").is_file())
    assert len(jobs) == 3
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert report([str(sweep), "--out", str(tmp_path / "rep")]) == 0
    rows = list(csv.DictReader((tmp_path / "rep.csv").open()))
    assert len(rows) == 3 and all(r["status"] == "done (step cap)" for r in rows)
    scores = [float(r["best_val_neg_elbo"]) for r in rows]
    assert min(scores) == best["best_value"]  # the sweeper minimised what the jobs returned
    for r in rows:  # every trial's folder is named after its sampled values, rounded
        assert "hparams_search" not in r["run"] and re.search(r"model.word_dropout-0\.\d{1,4}\+", r["run"])
    assert (tmp_path / "rep_search.png").stat().st_size > 5000
    table = (tmp_path / "rep.md").read_text().splitlines()
    rows = [line for line in table[4:] if line.startswith("| ")]  # a footnote may follow the rows
    assert [line.split(" | ")[0] for line in rows] == ["| #1", "| #2", "| #3"]
