"""The notebook runs from Jupyter's own directory (notebooks/) and from the repo root; data
paths saved relative to where a run was made are found again; the quick model."""

import json
import os
import re

import nbformat
import pytest

from conftest import ROOT, compose_cfg, tiny_overrides, write_corpus
from vae_text.core.errors import CheckpointError
from vae_text.pipeline import TextVAEPipeline
from vae_text.quick import notebook_checkpoint, quick_model
from vae_text.run.card import train_command
from vae_text.train import train

NOTEBOOK = ROOT / "notebooks" / "sample.ipynb"


def execute(path, checkpoint=None, quick_dir=None):
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {k: v for k, v in os.environ.items() if k not in ("VAE_TEXT_CHECKPOINT", "VAE_TEXT_QUICK_DIR")}
    if checkpoint is not None:
        env["VAE_TEXT_CHECKPOINT"] = str(checkpoint)
    if quick_dir is not None:  # where the quick model goes: never into the checkout
        env["VAE_TEXT_QUICK_DIR"] = str(quick_dir)
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(path)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs


@pytest.mark.slow
def test_notebook_from_its_own_folder_with_a_relative_data_dir(tmp_path, monkeypatch):
    project = tmp_path / "project"
    write_corpus(project / "corpus")
    monkeypatch.chdir(project)  # the run is made here, with data.dir=corpus (relative)
    train(compose_cfg(tiny_overrides("corpus", "eval.iw_samples=2", "train.max_steps=6")),
          project / "outputs" / "run")
    assert json.loads((project / "outputs" / "run" / "results.json").read_text())["steps"] == 6
    (project / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path)
    outputs = execute(project / "notebooks", "../outputs/run")  # relative to notebooks/
    text = "".join(o.get("text", "") for o in outputs)
    assert "37 test sentences" in text  # the corpus was found beside the run


def test_checkpoint_paths_from_the_project_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert notebook_checkpoint("notebooks") == ROOT / "notebooks"
    with pytest.raises(CheckpointError, match="nowhere: not found from"):
        notebook_checkpoint("nowhere")


def test_quick_model_trains_once_and_loads_from_anywhere(corpus_dir, tmp_path, monkeypatch, capsys):
    run = tmp_path / "quick"
    monkeypatch.setenv("VAE_TEXT_QUICK_DIR", str(run))
    tiny = [o for o in tiny_overrides(corpus_dir, "train.max_steps=4", "train.log_every=2")
            if o != "+experiment=smoke"]
    assert quick_model(overrides=tiny) == run
    said = capsys.readouterr().out.splitlines()  # what it does, then its progress, as it goes
    assert said[0].startswith(f"training a quick model into {run}: the smoke experiment's small "
                              f"LSTM VAE, 2 epochs on the first 1000 sentences of {corpus_dir}")
    assert [line.partition(" |")[0] for line in said if line.startswith("step ")][:2] == ["step 2 epoch 0",
                                                                                          "step 4 epoch 0"]
    left = [line for line in said if line.startswith("about ")]
    assert len(left) == 1 and re.fullmatch(r"about \d+ s of training left: 2 more steps at "
                                           r"\d+\.\d\d s/step \(validation .*\)", left[0]), left
    assert any(line.startswith("testing the best weights on 37 test sentences") for line in said)
    first = (run / "results.json").stat().st_mtime_ns
    assert quick_model(run, tiny) == run and (run / "results.json").stat().st_mtime_ns == first
    assert train_command(run).startswith("python -m vae_text.train +experiment=smoke "
                                         "data.max_sentences=1000")  # for the model card
    monkeypatch.chdir(tmp_path)
    vae = TextVAEPipeline.from_pretrained(run, device="cpu")
    assert len(vae.sentences("test")) == 37


@pytest.mark.slow
def test_notebook_without_a_checkpoint_trains_the_quick_model(ptb_dir, tmp_path):
    outputs = execute(ROOT / "notebooks", quick_dir=tmp_path / "quick")
    text = "".join(o.get("text", "") for o in outputs)
    assert f"training a quick model into {tmp_path / 'quick'}" in text and " of training left: 116 more steps" in text
    assert (tmp_path / "quick" / "results.json").is_file()
