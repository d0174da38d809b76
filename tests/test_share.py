"""Folders people can share: a model card, readable files, evaluate on a saved folder."""

import json
import os
import stat
import subprocess
import sys

import pytest

from conftest import ROOT, tiny_overrides
from vae_text.config import DataConfig
from vae_text.core.errors import DataError
from vae_text.data.locate import resolve_data
from vae_text.pipeline import TextVAEPipeline


def cli(module, *args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", f"vae_text.{module}", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture
def run_dir(corpus_dir, tmp_path):
    run = tmp_path / "run"
    proc = cli("train", *tiny_overrides(corpus_dir, "train.max_steps=6", "eval.iw_samples=4"),
               f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr
    return run


@pytest.mark.slow
def test_saved_folder_has_a_model_card_and_evaluate_reads_it(run_dir, tmp_path):
    from huggingface_hub import ModelCard

    vae = TextVAEPipeline.from_pretrained(run_dir, device="cpu")
    folder = vae.save_pretrained(tmp_path / "exports" / "tiny")
    test = json.loads((run_dir / "eval_test.json").read_text())
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "vae_text"
    assert {r.metric_type: r.metric_value for r in card.data.eval_results}["nll"] == test["nll_iw"]
    assert f"| IW-NLL (nats/sentence) | {test['nll_iw']:.4g} |" in card.text
    assert "python -m vae_text.train +experiment=smoke" in card.text and "train.max_steps=6" in card.text
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["test"]["nll_iw"] == test["nll_iw"] and metrics["test"]["sentences"] == 37
    assert metrics["command"].startswith("python -m vae_text.train")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask  # made as a temporary folder
    for path in folder.iterdir():  # safetensors alone would write model.safetensors 0600
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name
    # a folder saved from the saved folder keeps the card's metrics and command
    again = TextVAEPipeline.from_pretrained(folder, device="cpu").save_pretrained(tmp_path / "again")
    assert json.loads((again / "metrics.json").read_text()) == metrics

    # evaluate a saved folder: eval_<split>_k<K>_n<N>.json beside it, a quick look at 9 sentences
    proc = cli("evaluate", f"checkpoint={folder}", "iw_samples=3", "max_sentences=9",
               "progress=false", "num_threads=1")
    assert proc.returncode == 0, proc.stderr
    quick = json.loads((folder / "eval_test_k3_n9.json").read_text())
    assert quick["sentences"] == 9 and quick["iw_samples"] == 3 and quick["threads"] == 1
    # the same command again refuses to overwrite; overwrite=true replaces
    proc = cli("evaluate", f"checkpoint={folder}", "iw_samples=3", "max_sentences=9")
    assert proc.returncode == 2 and "exists: pass overwrite=true" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    proc = cli("evaluate", f"checkpoint={folder}", "iw_samples=3", "max_sentences=9",
               "overwrite=true", "progress=false")
    assert proc.returncode == 0, proc.stderr
    # on a run directory: the training run's eval_test.json is left alone
    proc = cli("evaluate", f"checkpoint={run_dir}", "iw_samples=4", "progress=false")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run_dir / "eval_test.json").read_text()) == test
    full = json.loads((run_dir / "eval_test_k4.json").read_text())
    assert full["sentences"] == 37 and full["rec"] == pytest.approx(test["rec"], rel=1e-5)


def test_relative_data_dirs_are_found_beside_the_run(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "data" / "corpus").mkdir(parents=True)
    run = project / "outputs" / "2026-01-01" / "12-00-00"
    run.mkdir(parents=True)
    elsewhere = tmp_path / "notebooks"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    data = DataConfig(dir="data/corpus", hub=None)
    assert resolve_data(data, run).dir == str(project / "data" / "corpus")
    absolute = DataConfig(dir=str(tmp_path / "nowhere"), hub=None)
    assert resolve_data(absolute, run) is absolute  # absolute paths are taken as they are
    with pytest.raises(DataError, match=r"data.dir=data/missing \(saved with the model\) is not a folder here"):
        resolve_data(DataConfig(dir="data/missing", hub=None), run)
    monkeypatch.chdir(project)  # found as given: unchanged
    assert resolve_data(data, run).dir == "data/corpus"
