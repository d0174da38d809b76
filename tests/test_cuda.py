"""The GPU path end to end: every latent family, encoder, decoder and remedy trains a few steps on
CUDA, and every entry point runs there (train, evaluate with generation, sample with every
decoding, export and load, resume).

Marked `cuda` (`pytest -m cuda` selects them) and skipped, with the reason, where CUDA is absent.
VAE_TEXT_CUDA_TESTS_DEVICE=cpu runs the same bodies on the CPU: how they are checked on a machine
without a GPU. On the CPU, tests/test_device_mixing.py catches tensors made off their inputs' device.
"""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from conftest import CUDA_MARKS, compose_cfg, tiny_overrides
from conftest import CUDA_TESTS_DEVICE as DEVICE
from vae_text.config import STRATEGIES, ModelConfig
from vae_text.core.errors import ConfigError
from vae_text.model.decoders import DECODERS
from vae_text.model.encoders import ENCODERS
from vae_text.model.latent import POSTERIORS, PRIORS
from vae_text.pipeline import TextVAEPipeline
from vae_text.train import train

pytestmark = CUDA_MARKS
STEPS = 4  # 40 sentences in batches of 7: the first epoch, cut short


def families() -> list[tuple[str, str]]:
    """Each posterior with each prior of its space, from the registries (conf/model/posterior,
    conf/model/prior hold one file per entry)."""
    out = []
    for posterior in POSTERIORS:
        for prior in PRIORS:
            try:
                ModelConfig(posterior=posterior, prior=prior)
            except ConfigError:  # a prior of another space
                continue
            out.append((posterior, prior))
    return out


def run(corpus_dir, run_dir, *extra: str) -> dict:
    """A few training steps on DEVICE (validation, test metrics and checkpoints included)."""
    cfg = compose_cfg(tiny_overrides(corpus_dir, f"device={DEVICE}", "data.max_sentences=40",
                                     f"train.max_steps={STEPS}", "eval.iw_samples=3", *extra))
    results = train(cfg, run_dir)
    saved = OmegaConf.load(run_dir / "config.yaml").model
    for part, name in (o.removeprefix("model/").split("=") for o in extra if o.startswith("model/")):
        assert saved[part] == name, part  # the part asked for is the part that trained
    steps = int(next((o.split("=")[1] for o in extra if o.startswith("train.max_steps=")), STEPS))
    assert results["steps"] == steps and torch.device(results["device"]).type == DEVICE
    test = results["test"]
    assert 0 < test["rec"] < 1e3 and test["kl"] >= 0 and test["sentences"] == 37
    return results


@pytest.mark.parametrize("posterior, prior", families(), ids=lambda name: name)
def test_every_latent_family_trains_and_evaluates(corpus_dir, tmp_path, posterior, prior):
    results = run(corpus_dir, tmp_path / "run", f"model/posterior={posterior}", f"model/prior={prior}")
    assert results["test"]["nll_iw"] > 0 and results["test"]["mi"] == results["test"]["mi"]


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_every_encoder_and_decoder_trains(corpus_dir, tmp_path, encoder, decoder):
    # the Transformers' widths (encoder 20, decoder 16) in 2 heads
    heads = [f"model.{part}_args.heads=2" for part, name in (("encoder", encoder), ("decoder", decoder))
             if name == "transformer"]
    run(corpus_dir, tmp_path / "run", f"model/encoder={encoder}", f"model/decoder={decoder}", *heads)


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_every_decoder_trains_as_a_language_model(corpus_dir, tmp_path, decoder):
    heads = ["model.decoder_args.heads=2"] if decoder == "transformer" else []
    results = run(corpus_dir, tmp_path / "run", "model=lm", f"model/decoder={decoder}", *heads)
    assert results["test"]["nll"] == results["test"]["rec"]


@pytest.mark.parametrize("remedy", ["remedy.pretrain_epochs=1", "remedy.aggressive=true"])
def test_remedies_train(corpus_dir, tmp_path, remedy):
    # pretraining: an epoch of 6 batches of autoencoder, then VAE steps; aggressive: inner steps
    run(corpus_dir, tmp_path / "run", remedy, f"train.max_steps={STEPS + 6}"
        if "pretrain" in remedy else "remedy.aggressive_max_inner=3")


def test_entry_points_evaluate_sample_export_and_resume(corpus_dir, tmp_path):
    from vae_text.evaluate import run as evaluate
    from vae_text.run.checkpoint import load_checkpoint
    from vae_text.sample import run as sample

    first = tmp_path / "run"
    run(corpus_dir, first)
    gen = {"samples": 6, "batch_size": 4, "max_len": 12, "reverse_epochs": 1, "reverse_embed": 8,
           "reverse_hidden": 10, "self_bleu_samples": 5, "probe_sentences": 30, "probe_steps": 5,
           "interpolation_pairs": 2, "interpolation_steps": 3, "neighbours": 1}
    out = evaluate({"checkpoint": str(first), "iw_samples": 3, "progress": False, "device": DEVICE,
                    "generation": True, "gen": gen})
    assert out["nll_iw"] > 0 and 0 <= out["generation"]["distinct_2"] <= 1

    for decoding in STRATEGIES:
        lines = sample({"checkpoint": str(first), "n": 3, "max_len": 9, "decoding": decoding,
                        "device": DEVICE})
        assert len(lines) == 3
    two = ["the cat sees the dog", "the big bird eats the fish"]
    assert len(sample({"checkpoint": str(first), "mode": "reconstruct", "sentences": two,
                       "from_mean": False, "device": DEVICE})) == 2
    assert len(sample({"checkpoint": str(first), "mode": "interpolate", "sentences": two,
                       "steps": 3, "device": DEVICE})) == 3

    vae = TextVAEPipeline.from_pretrained(first, device=DEVICE)
    folder = vae.save_pretrained(tmp_path / "export")
    again = TextVAEPipeline.from_pretrained(folder, device=DEVICE)
    assert again.device.type == DEVICE
    assert torch.allclose(again.encode(two).mean, vae.encode(two).mean)
    assert again.sample(2, seed=1) == vae.sample(2, seed=1)

    # resumed to twice the steps: the weights of one run of twice the steps
    whole = tmp_path / "whole"
    run(corpus_dir, whole, f"train.max_steps={2 * STEPS}")
    run(corpus_dir, first, f"train.max_steps={2 * STEPS}", f"train.resume={first}")
    a, b = load_checkpoint(whole, "last.pt")["model"], load_checkpoint(first, "last.pt")["model"]
    for key, value in a.items():
        assert torch.allclose(value, b[key], atol=2e-5, rtol=1e-4), key
