import dataclasses
import json
import os
import subprocess
import sys

import nbformat
import pytest
import torch

from conftest import ROOT, compose_cfg, tiny_overrides
from vae_text.config import ModelConfig
from vae_text.core.errors import CheckpointError
from vae_text.data.corpus import BOS, EOS, PAD, UNK, Vocab, collate, encode_split
from vae_text.model.textvae import build_model
from vae_text.pipeline import TextVAEPipeline, interpolate
from vae_text.train import train

CORPUS = ["the cat sat", "a dog ran far away", "the bird sang", "dogs bark", "a cat and a dog met"]


def memorised() -> TextVAEPipeline:
    """A small VAE trained until it reproduces its five sentences."""
    torch.manual_seed(0)
    words = sorted({w for s in CORPUS for w in s.split()})
    vocab = Vocab([PAD, BOS, EOS, UNK, *words])
    cfg = ModelConfig(embed_size=16, encoder_hidden=24, latent_size=6, decoder_hidden=20)
    model = build_model(cfg, vocab)
    split = encode_split([s.split() for s in CORPUS], vocab)
    batch = collate(split, torch.arange(len(CORPUS)))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        out = model(batch.tokens, batch.lengths)
        loss = out.rec.mean() + 0.05 * out.kl.sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return TextVAEPipeline(model, vocab, {"model": dataclasses.asdict(cfg)})


@pytest.fixture(scope="module")
def vae():
    return memorised()


def test_memorised_corpus_reconstructs_and_interpolation_endpoints(vae):
    assert vae.reconstruct(CORPUS) == CORPUS
    assert vae.reconstruct(CORPUS, decoding="beam", beam_size=3) == CORPUS
    for method in ("linear", "slerp"):
        points = vae.interpolate(CORPUS[0], CORPUS[1], steps=6, method=method)
        assert [t for t, _ in points] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        assert points[0][1] == CORPUS[0] and points[-1][1] == CORPUS[1]


def test_batch_equals_one_by_one(vae):
    together = vae.reconstruct(CORPUS, from_mean=False, decoding="sample", seed=3)
    mu = vae.encode(CORPUS).mean
    for i, s in enumerate(CORPUS):
        m = vae.encode([s]).mean
        torch.testing.assert_close(m[0], mu[i])
    assert vae.reconstruct(CORPUS[::-1]) == CORPUS[::-1]
    assert len(together) == 5


def test_sampling_is_reproducible(vae):
    assert vae.sample(4, "top_p", seed=5) == vae.sample(4, "top_p", seed=5)
    assert vae.sample(4, "sample", seed=5, temperature=2.0) != vae.sample(4, "sample", seed=6,
                                                                          temperature=2.0)


def test_slerp_keeps_the_norm_between_equal_norm_points():
    a, b = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 3.0])
    mid = interpolate(a, b, 0.5, "slerp")
    assert mid.norm().item() == pytest.approx(3.0)
    torch.testing.assert_close(interpolate(a, b, 0.0, "slerp"), a)
    torch.testing.assert_close(interpolate(a, b, 1.0, "slerp"), b)
    torch.testing.assert_close(interpolate(a, b, 0.25, "linear"), torch.tensor([2.25, 0, 0.75]))


def test_export_round_trip_gives_identical_logits(vae, tmp_path):
    folder = vae.save_pretrained(tmp_path / "export")
    again = TextVAEPipeline.from_pretrained(folder, device="cpu")
    batch = vae._batch(CORPUS)
    z = torch.randn(5, 6)
    with torch.no_grad():
        for m in (vae.model, again.model):
            m.eval()
        a = vae.model.reconstruction(batch.tokens, z)
        b = again.model.reconstruction(batch.tokens, z)
    assert torch.equal(a, b)
    assert TextVAEPipeline.from_pretrained(folder).reconstruct(CORPUS) == CORPUS
    card = (folder / "README.md").read_text()  # built in Python: no data, no metrics, no command
    assert "The model's config names no data" in card and "model-index" not in card
    assert "datasets" not in card and "Not evaluated" in card


def test_corrupt_or_mismatched_export_is_a_clear_error(vae, tmp_path):
    folder = vae.save_pretrained(tmp_path / "export")
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable model folder"):
        TextVAEPipeline.from_pretrained(folder)
    folder = vae.save_pretrained(tmp_path / "export2")
    config = json.loads((folder / "config.json").read_text())
    config["model"]["latent_size"] = 7
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not match config.json"):
        TextVAEPipeline.from_pretrained(folder)
    (folder / "vocab.json").unlink()
    with pytest.raises(CheckpointError, match="missing vocab.json"):
        TextVAEPipeline.from_pretrained(folder)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from conftest import write_corpus

    tmp = tmp_path_factory.mktemp("pipeline")
    corpus = write_corpus(tmp / "corpus")
    run = tmp / "run"
    train(compose_cfg(tiny_overrides(corpus, "eval.iw_samples=2", "train.epochs=3")), run)
    return run


def run_sample(*args):
    return subprocess.run([sys.executable, "-m", "vae_text.sample", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_sample_cli_modes(trained_run, tmp_path):
    proc = run_sample(f"checkpoint={trained_run}", "n=4", "decoding=top_p")
    assert proc.returncode == 0, proc.stderr
    assert len([line for line in proc.stdout.splitlines() if line.strip()[:2].rstrip(".").isdigit()]) == 4
    file = tmp_path / "s.txt"
    file.write_text("the cat sees the dog\nthe big bird eats the fish\n")
    proc = run_sample(f"checkpoint={trained_run}", "mode=reconstruct", f"file={file}", "decoding=beam")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n> ") == 2
    proc = run_sample(f"checkpoint={trained_run}", "mode=interpolate", "steps=4",
                      'sentences=["the cat sees the dog","the big bird eats the fish"]')
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()] == ["0.00", "0.33", "0.67", "1.00"]
    proc = run_sample(f"checkpoint={trained_run}", "mode=interpolate", 'sentences=["one"]')
    assert proc.returncode == 2 and "exactly two sentences" in proc.stderr
    proc = run_sample(f"checkpoint={trained_run}", "decoding=nucleus")
    assert proc.returncode == 2 and "decoding strategy 'nucleus' is unknown" in proc.stderr


NOTEBOOK = ROOT / "notebooks" / "sample.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.slow
def test_notebook_runs_against_a_trained_checkpoint(trained_run, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("VAE_TEXT_CHECKPOINT", str(trained_run))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    tables = [o for o in outputs if "text/html" in o.get("data", {})]
    assert len(images) == 2 and len(tables) == 3
    assert os.environ["VAE_TEXT_CHECKPOINT"] in "".join(o.get("text", "") for o in outputs)
    assert "| reverse PPL |" in "".join(o.get("text", "") for o in outputs)  # the generation suite
