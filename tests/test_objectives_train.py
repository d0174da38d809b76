"""The four objectives beyond the ELBO through the real loop: composed from conf/objective/, a few
steps on the tiny corpus, evaluated (IW-NLL, MI, AU), and mdr's lambda through a kill and resume."""

import json

import pytest
import torch

from conftest import compose_cfg, tiny_overrides
from vae_text.config import TrainRunConfig
from vae_text.run.checkpoint import load_checkpoint
from vae_text.train import train

OPTIONS = {  # each group's defaults, as conf/objective/<name>.yaml sets them
    "iwae": {"samples": 5, "dreg": False},
    "mdr": {"rate": 8.0, "lambda_lr": 0.01, "lambda_init": 0.0},
    "infovae": {"alpha": 0.0, "lambda_": 1000.0, "kernel": "imq", "scale": 1.0},
    "capacity": {"gamma": 1000.0, "c_max": 8.0, "steps": 10000},
}
OWN_STAT = {"iwae": "iw_bound", "mdr": "lambda", "infovae": "mmd", "capacity": "capacity"}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_each_group_composes_with_its_defaults_and_schedule(corpus_dir, name):
    settings = TrainRunConfig.from_cfg(compose_cfg(tiny_overrides(corpus_dir, f"objective={name}")))
    assert settings.objective.name == name and dict(settings.objective.args) == OPTIONS[name]
    # the smoke experiment overrides the schedule (linear), as +experiment=ptb does
    assert settings.objective.schedule.name == "linear"
    plain = TrainRunConfig.from_cfg(compose_cfg([f"objective={name}"]))
    assert plain.objective.schedule.name == ("linear" if name == "iwae" else "constant")


@pytest.mark.parametrize("name,extra", [
    ("iwae", ["objective.args.samples=3", "objective.args.dreg=true"]),
    ("mdr", ["objective.args.rate=3.0", "objective.args.lambda_lr=0.05"]),
    ("infovae", ["objective.args.lambda_=50.0", "objective.args.kernel=rbf"]),
    ("capacity", ["objective.args.gamma=5.0", "objective.args.steps=20"]),
])
def test_each_objective_trains_and_evaluates(corpus_dir, tmp_path, name, extra):
    run = tmp_path / name
    results = train(compose_cfg(tiny_overrides(
        corpus_dir, f"objective={name}", "train.max_steps=12", "eval.iw_samples=3", *extra)), run)
    test = results["test"]
    assert test["nll_iw"] > 0 and test["mi"] == test["mi"] and 0 <= test["au"] <= 6
    assert test["neg_elbo"] == pytest.approx(test["rec"] + test["kl"])  # beta = 1 reporting
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "train/loss" in r]
    assert train_records and all(f"train/{OWN_STAT[name]}" in r for r in train_records)
    assert all(r["train/loss"] == r["train/loss"] for r in train_records)  # finite, not NaN
    assert load_checkpoint(run, "last.pt")["config"]["objective"]["name"] == name


@pytest.mark.parametrize("name,extra", [
    ("mdr", ["objective.args.rate=20.0", "objective.args.lambda_lr=0.03"]),
    ("infovae", ["objective.args.lambda_=50.0"]),  # its prior draws are seeded by the step
])
def test_a_killed_run_resumes_bit_identically_and_mdr_lambda_survives(corpus_dir, tmp_path,
                                                                        name, extra):
    n = 9  # 18 batches an epoch: the kill is mid-epoch
    options = [f"objective={name}", *extra, "model.embed_dropout=0.3", "model.word_dropout=0.25",
               "train.epochs=3"]
    run = lambda run_name, steps, *more: train(compose_cfg(tiny_overrides(  # noqa: E731
        corpus_dir, *options, f"train.max_steps={steps}", *more)), tmp_path / run_name)
    run("one", 2 * n)
    run("first", n)
    run("second", 2 * n, f"train.resume={tmp_path / 'first'}")
    one, first, second = (load_checkpoint(tmp_path / r, "last.pt") for r in ("one", "first", "second"))
    assert second["objective"] == one["objective"]  # mdr: lambda to the last bit
    if name == "mdr":  # the constraint was active: lambda had a value to lose
        assert first["objective"]["lam"] > 0 and first["objective"]["lam"] != one["objective"]["lam"]
    assert second["state"]["step"] == one["state"]["step"] == 2 * n
    for key, value in one["model"].items():
        assert torch.equal(value, second["model"][key]), key
