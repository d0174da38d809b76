"""Sharing a model on the hub's conventions, offline: save_pretrained into a folder (safetensors,
config.json, vocab, a ModelCard with `model-index` metrics), from_pretrained from that folder and
from a repository id in the hub cache, a used folder refused or replaced whole, push_to_hub's one
line when the hub cannot be reached."""

import json
import pickle
import re
import shutil
import struct
from pathlib import Path

import pytest
import torch

from vae_text.core.errors import CheckpointError, OutputError
from vae_text.pipeline import TextVAEPipeline
from vae_text.run.card import train_command

SENTENCES = ["the cat sees the dog", "the big bird eats the small fish"]


@pytest.fixture
def run_dir(tiny_run):
    return tiny_run  # the session's tiny trained run: these tests only read it


@pytest.fixture
def vae(run_dir):
    return TextVAEPipeline.from_pretrained(run_dir, device="cpu")


def no_pickle(*args, **kwargs):
    raise AssertionError("a save_pretrained folder is read without pickle")


def test_round_trip_gives_identical_outputs_without_pickle(vae, tmp_path, monkeypatch):
    from huggingface_hub import ModelHubMixin

    assert isinstance(vae, ModelHubMixin)
    folder = vae.save_pretrained(tmp_path / "tiny")
    assert folder == tmp_path / "tiny"
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "vocab.json",
                                                  "README.md", "metrics.json"}
    raw = (folder / "model.safetensors").read_bytes()  # safetensors: u64 header size, JSON header
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    assert header.keys() - {"__metadata__"} == vae.model.state_dict().keys()
    assert json.loads((folder / "config.json").read_text())["model"]["latent_size"] == 6

    monkeypatch.setattr(torch, "load", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    again = TextVAEPipeline.from_pretrained(folder, device="cpu")
    assert isinstance(again, TextVAEPipeline) and again.home == folder
    assert again.config == vae.config and again.tokenizer.itos == vae.tokenizer.itos
    batch = vae._batch(SENTENCES)  # batch 2, 7 and 8 tokens; embed 12, hidden 20/16, latent 6, vocab 24
    z = torch.randn(2, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = [m.reconstruction(batch.tokens, z) for m in (vae.model, again.model)]
        outs = [m(batch.tokens, batch.lengths, torch.Generator().manual_seed(1))
                for m in (vae.model, again.model)]
    assert torch.equal(*logits)
    assert torch.equal(outs[0].rec, outs[1].rec) and torch.equal(outs[0].kl, outs[1].kl)
    assert again.reconstruct(SENTENCES) == vae.reconstruct(SENTENCES)


def test_card_carries_license_data_and_model_index_metrics(vae, run_dir, tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    folder = vae.save_pretrained(tmp_path / "exports" / "tiny")
    card = ModelCard.load(folder / "README.md")
    test = json.loads((run_dir / "eval_test.json").read_text())
    assert card.data.license == "mit" and card.data.library_name == "vae_text"
    assert card.data.datasets == ["ptb"]  # the data's name: the tiny corpus is not on the hub
    assert {"variational-autoencoder", "pytorch"} <= set(card.data.tags)
    values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert values == {"nll": test["nll_iw"], "perplexity": test["ppl_iw"], "kl": test["kl"],
                      "mutual_information": test["mi"], "active_units": test["au"]}
    assert {(r.task_type, r.dataset_split) for r in card.data.eval_results} == {("text-generation", "test")}
    assert "(K=2)" in card.data.eval_results[0].metric_name
    text = (folder / "README.md").read_text()
    assert str(run_dir) not in text and vae.config["data"]["dir"] not in text  # neither the run's nor the data's path
    assert "Trained from Python with `vae_text.train.train(cfg)`" in text
    # the card's snippet loads the folder from any directory
    snippet = re.search(r"```python\n(.*?)```", text, flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(snippet, scope)
    assert len(scope["vae"].sample(2, seed=0)) == 2


def test_card_of_a_hub_dataset_and_a_recorded_command(run_dir, tmp_path):
    from huggingface_hub import ModelCard

    from vae_text.quick import QUICK, record_command

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    record_command(run, [*QUICK, "model.latent_size=6"])
    assert train_command(run) == "python -m vae_text.train " + " ".join([*QUICK, "model.latent_size=6"])
    vae = TextVAEPipeline.from_pretrained(run, device="cpu")
    vae.config["data"]["hub"] = {"id": "ptb-text-only/ptb_text_only"}
    card = ModelCard.load(vae.save_pretrained(tmp_path / "out", repo_id="alice/tiny-vae") / "README.md")
    assert card.data.datasets == ["ptb-text-only/ptb_text_only"]
    assert card.data.eval_results[0].dataset_type == "ptb-text-only/ptb_text_only"
    assert card.data.model_name == "alice/tiny-vae"
    assert "TextVAEPipeline.from_pretrained('alice/tiny-vae')" in card.text
    assert "python -m vae_text.train +experiment=smoke data.max_sentences=1000" in card.text
    # saved from the saved folder: the same record, and so the same metrics and command
    again = TextVAEPipeline.from_pretrained(tmp_path / "out", device="cpu").save_pretrained(tmp_path / "again")
    assert (again / "metrics.json").read_text() == (tmp_path / "out" / "metrics.json").read_text()


def test_a_used_folder_is_refused_or_replaced_whole(vae, run_dir, tmp_path):
    folder = vae.save_pretrained(tmp_path / "tiny")
    (folder / "eval_test_k10_n200.json").write_text("{}")  # what evaluate writes beside the model
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(OutputError) as err:
        vae.save_pretrained(folder)
    assert str(err.value) == (f"{folder} is not empty: pass overwrite=True to replace it whole, "
                              f"or choose a new folder")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing touched
    vae.save_pretrained(folder, overwrite=True)
    assert not (folder / "eval_test_k10_n200.json").exists()
    fresh = vae.save_pretrained(tmp_path / "fresh")
    assert {p.name for p in folder.iterdir()} == {p.name for p in fresh.iterdir()}
    assert (folder / "model.safetensors").read_bytes() == (fresh / "model.safetensors").read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left
    # into its own folder: the record is read before the folder is replaced
    TextVAEPipeline.from_pretrained(folder, device="cpu").save_pretrained(folder, overwrite=True)
    assert (folder / "metrics.json").read_text() == (fresh / "metrics.json").read_text()
    with pytest.raises(OutputError, match=f"^{re.escape(str(run_dir))} is a run directory: save"):
        vae.save_pretrained(run_dir, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file or a link, not a folder"):
        vae.save_pretrained(tmp_path / "file", overwrite=True)
    (tmp_path / "empty").mkdir()
    assert (vae.save_pretrained(tmp_path / "empty") / "model.safetensors").is_file()


def test_from_pretrained_a_repository_id_in_the_hub_cache(vae, tmp_path):
    local = vae.save_pretrained(tmp_path / "local", repo_id="alice/tiny-vae")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub_cache" / "models--alice--tiny-vae"
    shutil.copytree(local, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    again = TextVAEPipeline.from_pretrained("alice/tiny-vae", device="cpu",
                                            cache_dir=tmp_path / "hub_cache", local_files_only=True)
    assert again.reconstruct(SENTENCES) == vae.reconstruct(SENTENCES)
    z = vae.model.prior.sample(3)
    assert again.decode(z) == vae.decode(z)
    with pytest.raises(CheckpointError, match="^alice/absent: not a folder here, and the hub could "
                                              "not provide it"):
        TextVAEPipeline.from_pretrained("alice/absent", cache_dir=tmp_path / "hub_cache",
                                        local_files_only=True)
    with pytest.raises(CheckpointError, match="nor a hub repository id"):  # looks like one, is not
        TextVAEPipeline.from_pretrained("alice/two--dashes", cache_dir=tmp_path / "hub_cache",
                                        local_files_only=True)
    for path in ("no such/folder", "./alice/tiny-vae", "runs/a/b", "alice/best.pt"):  # paths
        with pytest.raises(CheckpointError, match=f"^{re.escape(str(Path(path)))}: checkpoint not found"):
            TextVAEPipeline.from_pretrained(path, cache_dir=tmp_path / "hub_cache")


def test_push_to_hub_offline_is_one_line(vae, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OutputError) as err:
        vae.push_to_hub("alice/tiny-vae", token="hf_not_a_token")
    message = str(err.value)
    assert message.startswith("push_to_hub alice/tiny-vae: Cannot reach https://")
    assert "offline mode is enabled" in message and "\n" not in message


def test_push_to_hub_uploads_the_saved_folder_and_replaces_the_repository(vae, monkeypatch):
    from types import SimpleNamespace

    from huggingface_hub import HfApi, ModelCard

    uploads = []

    def upload_folder(self, *, folder_path, **kwargs):  # what huggingface_hub would send
        card = ModelCard.load(folder_path / "README.md")
        uploads.append(({p.name for p in folder_path.iterdir()}, card, kwargs))
        return "https://hub.example/alice/tiny-vae/commit/1"

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: SimpleNamespace(repo_id=repo_id))
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    assert vae.push_to_hub("alice/tiny-vae") == "https://hub.example/alice/tiny-vae/commit/1"
    vae.push_to_hub("alice/tiny-vae", keep_other_files=True)
    (names, card, kwargs), (_, _, keeping) = uploads
    assert names == {"config.json", "model.safetensors", "vocab.json", "README.md", "metrics.json"}
    assert card.data.model_name == "alice/tiny-vae" and len(card.data.eval_results) == 5
    assert "from_pretrained('alice/tiny-vae')" in card.text
    assert kwargs["repo_id"] == "alice/tiny-vae" and kwargs["delete_patterns"] == "*"
    assert keeping["delete_patterns"] is None


def test_a_folder_that_cannot_be_made_is_one_line(vae, tmp_path):
    (tmp_path / "afile").write_text("x")
    target = tmp_path / "afile" / "tiny"
    with pytest.raises(OutputError, match=f"^{re.escape(str(target))}: cannot write beside it"):
        vae.save_pretrained(target)
