import json
import math

import pytest
import torch

from conftest import compose_cfg, tiny_overrides
from vae_text.core.errors import CheckpointError
from vae_text.run.checkpoint import load_checkpoint
from vae_text.train import train


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_train_writes_results_checkpoints_and_beta1_metrics(corpus_dir, tmp_path):
    cfg = compose_cfg(tiny_overrides(corpus_dir, "objective/schedule=constant",
                                     "objective.kl_weight=0.3"))
    run = tmp_path / "run"
    results = train(cfg, run)
    assert results["epochs"] == 2 and results["steps"] == 2 * math.ceil(120 / 7)
    test = results["test"]
    assert test["sentences"] == 37 and test["tokens"] == json.loads(
        (run / "results.json").read_text())["test"]["tokens"]
    # validation and test report the beta = 1 ELBO, whatever the training weight
    assert test["neg_elbo"] == pytest.approx(test["rec"] + test["kl"])
    assert test["kl"] == pytest.approx(sum(test["kl_per_dim"]))
    assert test["ppl_elbo"] == pytest.approx(math.exp(test["neg_elbo"] * 37 / test["tokens"]))
    records = read_metrics(run)
    vals = [r for r in records if "val/neg_elbo" in r]
    assert len(vals) == 2 and results["best_val_neg_elbo"] == min(r["val/neg_elbo"] for r in vals)
    betas = {r["train/beta"] for r in records if "train/beta" in r}
    assert betas == {0.3}
    for name in ("best.pt", "last.pt"):
        blob = load_checkpoint(run, name)  # weights_only=True inside
        assert blob["vocab"][:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
        assert blob["config"]["objective"]["kl_weight"] == 0.3
    assert "optimizer" in load_checkpoint(run, "last.pt")
    assert not list(run.rglob("*.tmp*"))  # atomic writes leave no temp files


def test_language_model_and_autoencoder_baselines_train(corpus_dir, tmp_path):
    lm = train(compose_cfg(tiny_overrides(corpus_dir, "model=lm", "train.epochs=1")), tmp_path / "lm")
    assert lm["test"]["kl"] == 0 and lm["test"]["nll"] == lm["test"]["neg_elbo"]
    assert lm["test"]["ppl"] == pytest.approx(lm["test"]["ppl_elbo"])
    ae = train(compose_cfg(tiny_overrides(corpus_dir, "model=ae", "objective.kl_weight=0",
                                          "train.epochs=1")), tmp_path / "ae")
    assert ae["test"]["rec"] < lm["test"]["rec"] + 20  # trains; rec is finite and sane
    # z = mu has no likelihood to bound: rec and MI, no IW-NLL (smoke asks for K = 10)
    assert "nll_iw" not in ae["test"] and {"mi", "au"} <= ae["test"].keys()


def test_early_stopping_and_max_steps(corpus_dir, tmp_path):
    r = train(compose_cfg(tiny_overrides(corpus_dir, "train.max_steps=5")), tmp_path / "a")
    assert r["steps"] == 5 and r["epochs"] == 0 and r["stopped"] == "max_steps"
    r = train(compose_cfg(tiny_overrides(corpus_dir, "train.epochs=30", "train.early_stopping=1",
                                         "optim.lr=0.5")), tmp_path / "b")
    assert r["epochs"] < 30 and r["stopped"] == "early_stopping"  # lr 0.5 diverges
    # the wall-time budget is checked every log_every (5) steps: a spent budget stops at the first
    r = train(compose_cfg(tiny_overrides(corpus_dir, "train.max_minutes=1e-9")), tmp_path / "c")
    assert r["steps"] == 5 and r["epochs"] == 0 and r["stopped"] == "max_minutes"
    assert (tmp_path / "c" / "checkpoints" / "best.pt").exists() and r["test"]["nll_iw"] > 0
    # a stopped run killed during its test evaluation resumes to the evaluation, not to training
    for run, extra in (("b", ("train.epochs=30", "train.early_stopping=1", "optim.lr=0.5")),
                       ("c", ("train.max_minutes=1e-9",))):
        before = json.loads((tmp_path / run / "results.json").read_text())
        again = train(compose_cfg(tiny_overrides(corpus_dir, *extra,
                                                 f"train.resume={tmp_path / run}")), tmp_path / run)
        assert (again["steps"], again["epochs"], again["stopped"]) == (
            before["steps"], before["epochs"], before["stopped"])
        assert again["test"]["neg_elbo"] == pytest.approx(before["test"]["neg_elbo"])
    r = train(compose_cfg(tiny_overrides(corpus_dir, "train.epochs=1", "train.max_minutes=60")),
              tmp_path / "d")
    assert r["epochs"] == 1 and r["stopped"] == "epochs"


def resume_overrides(corpus_dir, *extra):
    # dropout, word dropout, annealing and lr decay: every piece of state a resume must restore
    return tiny_overrides(corpus_dir, "model.embed_dropout=0.3", "model.output_dropout=0.2",
                          "model.word_dropout=0.25", "objective.schedule.warmup_steps=30",
                          "optim.plateau_factor=0.5", "optim.plateau_patience=0",
                          "train.epochs=5", *extra)


def position(blob: dict) -> dict:
    """The loop state of a checkpoint, without its wall time."""
    return {k: v for k, v in blob["state"].items() if k != "seconds"}


def test_resume_gives_the_same_weights_as_one_run(corpus_dir, tmp_path):
    n = 26  # 18 batches an epoch: the stop is mid-epoch 2, the 2N run crosses two epoch ends
    train(compose_cfg(resume_overrides(corpus_dir, f"train.max_steps={2 * n}")), tmp_path / "one")
    train(compose_cfg(resume_overrides(corpus_dir, f"train.max_steps={n}")), tmp_path / "first")
    train(compose_cfg(resume_overrides(corpus_dir, f"train.max_steps={2 * n}",
                                       f"train.resume={tmp_path / 'first'}")), tmp_path / "second")
    one = load_checkpoint(tmp_path / "one", "last.pt")
    two = load_checkpoint(tmp_path / "second", "last.pt")
    assert position(one) == position(two) and one["state"]["step"] == 2 * n
    assert two["state"]["seconds"] > load_checkpoint(tmp_path / "first", "last.pt")["state"]["seconds"] > 0
    for key, value in one["model"].items():
        assert torch.equal(value, two["model"][key]), key
    assert one["optimizer"]["param_groups"][0]["lr"] == two["optimizer"]["param_groups"][0]["lr"]
    # the first run's directory is left as it was
    assert load_checkpoint(tmp_path / "first", "last.pt")["state"]["step"] == n


def test_a_finished_run_directory_is_never_overwritten(corpus_dir, tmp_path):
    from vae_text.core.errors import ConfigError

    run = tmp_path / "run"
    train(compose_cfg(tiny_overrides(corpus_dir, "train.max_steps=2")), run)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run"):
        train(compose_cfg(tiny_overrides(corpus_dir, "train.max_steps=3")), run)
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


def test_an_interrupted_run_continues_in_its_own_directory(corpus_dir, tmp_path):
    n = 26
    train(compose_cfg(resume_overrides(corpus_dir, f"train.max_steps={2 * n}")), tmp_path / "one")
    run = tmp_path / "run"
    train(compose_cfg(resume_overrides(corpus_dir, f"train.max_steps={n}")), run)
    lines = len((run / "metrics.jsonl").read_text().splitlines())
    train(compose_cfg(resume_overrides(corpus_dir, f"train.max_steps={2 * n}", f"train.resume={run}")), run)
    one, two = load_checkpoint(tmp_path / "one", "last.pt"), load_checkpoint(run, "last.pt")
    assert position(one) == position(two)
    for key, value in one["model"].items():
        assert torch.equal(value, two["model"][key]), key
    assert len((run / "metrics.jsonl").read_text().splitlines()) > lines  # appended, not replaced


def test_resume_errors(corpus_dir, tmp_path):
    train(compose_cfg(tiny_overrides(corpus_dir, "train.max_steps=3")), tmp_path / "first")
    with pytest.raises(CheckpointError, match="model.latent_size is 6 in the checkpoint but 5"):
        train(compose_cfg(tiny_overrides(corpus_dir, "model.latent_size=5",
                                         f"train.resume={tmp_path / 'first'}")), tmp_path / "x")
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    with pytest.raises(CheckpointError, match="last.pt: not a readable vae_text checkpoint"):
        train(compose_cfg(tiny_overrides(corpus_dir, f"train.resume={last}")), tmp_path / "y")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        train(compose_cfg(tiny_overrides(corpus_dir, f"train.resume={tmp_path}/nope.pt")),
              tmp_path / "z")
    assert not (tmp_path / "y" / "checkpoints").exists()


def test_wandb_offline_run_records_the_logged_metrics(corpus_dir, tmp_path, monkeypatch):
    import wandb_history

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    train(compose_cfg(tiny_overrides(corpus_dir, "logger=wandb", "logger.tags=[test]")), run)
    history = wandb_history.read(run)
    logged = read_metrics(run)
    val = [r["val/neg_elbo"] for r in logged if "val/neg_elbo" in r]
    assert [h["val/neg_elbo"] for h in history if "val/neg_elbo" in h] == pytest.approx(val)
    test = next(r for r in logged if "test/rec" in r)
    assert any(h.get("test/rec") == pytest.approx(test["test/rec"]) for h in history)
    assert any("train/loss" in h for h in history)


def test_a_checkpoint_from_before_the_remedy_objects_resumes(corpus_dir, tmp_path):
    # 0.1.0 kept the remedies' state in the loop state; such a last.pt must still resume exactly
    from vae_text.run.checkpoint import save_checkpoint

    n = 26
    overrides = resume_overrides(corpus_dir, "remedy.pretrain_epochs=1")
    train(compose_cfg([*overrides, f"train.max_steps={2 * n}"]), tmp_path / "one")
    train(compose_cfg([*overrides, f"train.max_steps={n}"]), tmp_path / "first")
    last = tmp_path / "first" / "checkpoints" / "last.pt"
    blob = load_checkpoint(last, "last.pt")
    remedies = blob.pop("remedies")
    blob["state"].update(pretraining=remedies["pretrain"]["active"], aggressive=False,
                         best_mi=float("-inf"))
    blob["state"].pop("phase_epoch")
    save_checkpoint(last, blob)
    train(compose_cfg([*overrides, f"train.max_steps={2 * n}",
                       f"train.resume={tmp_path / 'first'}"]), tmp_path / "second")
    one, two = (load_checkpoint(tmp_path / r, "last.pt") for r in ("one", "second"))
    assert position(one) == position(two)
    assert all(torch.equal(one["model"][k], two["model"][k]) for k in one["model"])


def test_resume_with_fewer_batches_an_epoch_is_one_line_not_a_hang(corpus_dir, tmp_path):
    from vae_text.core.errors import CheckpointError

    train(compose_cfg(tiny_overrides(corpus_dir, "train.max_steps=12")), tmp_path / "a")
    with pytest.raises(CheckpointError, match="train.batch_size"):
        train(compose_cfg(tiny_overrides(corpus_dir, "train.max_steps=30", "train.batch_size=64",
                                         f"train.resume={tmp_path / 'a'}")), tmp_path / "b")
