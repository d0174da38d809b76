"""The notebook runs from Jupyter's own directory (notebooks/) and from the repo root; data
paths saved relative to where a run was made are found again; the quick model."""

import json
import os

import nbformat
import pytest

from conftest import ROOT, compose_cfg, tiny_overrides, write_corpus
from vae_text.core.errors import CheckpointError
from vae_text.pipeline import TextVAEPipeline
from vae_text.quick import notebook_checkpoint, quick_model
from vae_text.train import train

NOTEBOOK = ROOT / "notebooks" / "sample.ipynb"


def execute(path, checkpoint=None):
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {k: v for k, v in os.environ.items() if k != "VAE_TEXT_CHECKPOINT"}
    if checkpoint is not None:
        env["VAE_TEXT_CHECKPOINT"] = str(checkpoint)
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


def test_quick_model_trains_once_and_loads_from_anywhere(corpus_dir, tmp_path, monkeypatch):
    run = tmp_path / "quick"
    tiny = [o for o in tiny_overrides(corpus_dir, "train.max_steps=4") if o != "+experiment=smoke"]
    assert quick_model(run, tiny) == run
    first = (run / "results.json").stat().st_mtime_ns
    assert quick_model(run, tiny) == run and (run / "results.json").stat().st_mtime_ns == first
    monkeypatch.chdir(tmp_path)
    vae = TextVAEPipeline.load(run, device="cpu")
    assert len(vae.sentences("test")) == 37


@pytest.mark.slow
def test_notebook_without_a_checkpoint_trains_the_quick_model(ptb_dir):
    outputs = execute(ROOT / "notebooks")
    assert "outputs/quick" in "".join(o.get("text", "") for o in outputs)
