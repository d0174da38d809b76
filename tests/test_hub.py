"""Sharing through the hub with huggingface_hub's ModelHubMixin, offline: save_pretrained into a
folder, from_pretrained from that folder and from a repository id in the hub cache."""

import shutil

import pytest

from conftest import compose_cfg, tiny_overrides
from vae_text.core.errors import CheckpointError
from vae_text.pipeline import TextVAEPipeline
from vae_text.train import train

SENTENCES = ["the cat sees the dog", "the big bird eats the small fish"]


@pytest.fixture
def vae(corpus_dir, tmp_path):
    run = tmp_path / "run"
    train(compose_cfg(tiny_overrides(corpus_dir, "train.max_steps=6", "eval.iw_samples=2")), run)
    return TextVAEPipeline.load(run, device="cpu")


def test_save_pretrained_and_from_pretrained_offline(vae, tmp_path):
    from huggingface_hub import ModelHubMixin

    assert isinstance(vae, ModelHubMixin) and callable(vae.push_to_hub)
    local = tmp_path / "local"
    vae.save_pretrained(local)  # what push_to_hub uploads
    names = {p.name for p in local.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.json", "README.md", "metrics.json"} <= names
    assert "library_name: vae_text" in (local / "README.md").read_text()  # our card, not the default
    expected = vae.reconstruct(SENTENCES)
    assert TextVAEPipeline.from_pretrained(local, device="cpu").reconstruct(SENTENCES) == expected

    # a repository id, served from the huggingface_hub cache (its own layout), no network
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub_cache" / "models--alice--tiny-vae"
    shutil.copytree(local, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    again = TextVAEPipeline.from_pretrained("alice/tiny-vae", device="cpu",
                                            cache_dir=tmp_path / "hub_cache", local_files_only=True)
    assert again.reconstruct(SENTENCES) == expected
    z = vae.model.prior.sample(3)
    assert again.decode(z) == vae.decode(z)
    with pytest.raises(CheckpointError, match="alice/absent: not an export folder, and the hub"):
        TextVAEPipeline.from_pretrained("alice/absent", cache_dir=tmp_path / "hub_cache",
                                        local_files_only=True)
    with pytest.raises(CheckpointError, match="neither an export folder nor a hub repository id"):
        TextVAEPipeline.from_pretrained("no such/folder", cache_dir=tmp_path / "hub_cache",
                                        local_files_only=True)
