"""The Transformer parts under the collapse toolkit: a latent the decoder ignores collapses under
beta = 1 and a used one beats the language model; every remedy, metric, export, the sample CLI
and the experiments work with them unchanged."""

import math
import random
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, compose_cfg, tiny_overrides
from vae_text.config import ModelConfig
from vae_text.data.corpus import BOS, EOS, PAD, UNK, Vocab, collate, encode_split
from vae_text.model.textvae import build_model
from vae_text.objectives import elbo_loss
from vae_text.pipeline import TextVAEPipeline
from vae_text.remedies import reinitialize_decoder
from vae_text.run.parts import train_settings
from vae_text.train import train

TRANSFORMERS = ["model/decoder=transformer", "model/encoder=transformer"]


def random_corpus(n=300, length=5, words=10, seed=0):
    """Sentences of independent uniform words: ln(10) nats a word that only z can save the decoder
    (too many for the tiny LM to memorise in the steps it gets)."""
    rng = random.Random(seed)
    sents = [[f"w{rng.randrange(words)}" for _ in range(length)] for _ in range(n)]
    vocab = Vocab([PAD, BOS, EOS, UNK, *sorted({w for s in sents for w in s})])
    return vocab, collate(encode_split(sents, vocab), torch.arange(n))


def fit(kind, vocab, batch, ignore_z=False, free_nats=0.0, steps=120):
    """Full-batch Adam on the beta = 1 objective; returns rec and KL (nats a sentence) after it."""
    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, embed_size=12, encoder_hidden=20, latent_size=6, decoder_hidden=16,
                      decoder_layers=1, decoder="transformer", decoder_args={"heads": 2})
    m = build_model(cfg, vocab)
    if ignore_z:  # the decoder reads nothing of z: its scores are the LM's whatever z is
        m.decoder.to_memory = m.decoder.to_embedding = None
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    for _ in range(steps):
        out = m(batch.tokens, batch.lengths)
        loss = elbo_loss(out.rec, out.kl, 1.0, free_nats)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = m.eval()(batch.tokens, batch.lengths)
    return out.rec.mean().item(), out.kl.sum(-1).mean().item()


def test_an_ignored_latent_collapses_and_a_used_one_beats_the_language_model():
    vocab, batch = random_corpus()
    rec_ignored, kl_ignored = fit("vae", vocab, batch, ignore_z=True)
    rec_lm, _ = fit("lm", vocab, batch)
    rec_used, kl_used = fit("vae", vocab, batch, free_nats=6.0)  # beta = 1, 1 free nat a dimension
    assert kl_ignored < 1e-3  # nothing to gain from z: the KL term alone drives q(z|x) to p(z)
    # z carries nats that the LM, and the decoder that ignores z, have to pay for
    assert 4.0 < kl_used and rec_used < min(rec_lm, rec_ignored) - 1.0


def test_reinitialising_the_decoder_redraws_every_weight():
    m = build_model(ModelConfig(latent_size=5, decoder_hidden=12, decoder="transformer",
                                decoder_args={"tie_embeddings": True}), random_corpus(20)[0])
    with torch.no_grad():
        for p in m.decoder.parameters():
            p.add_(0.5)
    before = {k: v.clone() for k, v in m.decoder.state_dict().items()}
    reinitialize_decoder(m)
    after = m.decoder.state_dict()
    for key, value in before.items():
        assert not torch.equal(value, after[key]), key
    assert after["readout.bias"].abs().max() == 0 and after["embed.weight"][0].abs().max() == 0  # <pad>: 0
    assert after["embed.weight"].std().item() == pytest.approx(12 ** -0.5, rel=0.2)  # N(0, 1/d)


@pytest.mark.parametrize("extra", [
    ("objective.free_bits=2", "model.bn_gamma=0.6", "model.word_dropout=0.2", "train.batch_size=8"),
    ("remedy.pretrain_epochs=1", "objective.free_bits=2"),
    ("remedy.aggressive=true", "remedy.aggressive_max_inner=4", "remedy.aggressive_check_every=2"),
], ids=["free-bits-bn", "pretrain", "aggressive"])
def test_remedies_and_metrics_run_with_transformer_parts(corpus_dir, tmp_path, extra):
    cfg = compose_cfg(tiny_overrides(corpus_dir, *TRANSFORMERS, "model.decoder_args.inject=memory",
                                     "model.encoder_args.pool=first", "train.epochs=1",
                                     "eval.iw_samples=3", *extra))
    results = train(cfg, tmp_path / "run")
    test = results["test"]
    assert len(test["kl_per_dim"]) == 6 and 0 <= test["au"] <= 6
    assert math.isfinite(test["nll_iw"]) and test["nll_iw"] <= test["rec"] + test["kl"] + 1e-3
    assert math.isfinite(test["mi"]) and 0 <= test["token_accuracy"] <= 1 and "recon_bleu" in test


def test_export_from_pretrained_and_the_sample_cli(corpus_dir, tmp_path):
    run = tmp_path / "run"
    train(compose_cfg(tiny_overrides(corpus_dir, *TRANSFORMERS, "model.decoder_args.tie_embeddings=true",
                                     "model.decoder_args.memory_slots=2", "train.epochs=1",
                                     "eval.iw_samples=2")), run)
    vae = TextVAEPipeline.from_pretrained(run, device="cpu")
    again = TextVAEPipeline.from_pretrained(vae.save_pretrained(tmp_path / "export"), device="cpu")
    sentences = ["the cat sees the dog", "the old bird eats the fish and likes the car"]
    batch = vae._batch(sentences)
    z = torch.randn(2, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = vae.model.eval().reconstruction(batch.tokens, z)
        b = again.model.eval().reconstruction(batch.tokens, z)
    assert torch.equal(a, b) and a.min() > 0
    for strategy in ("greedy", "beam", "top_k", "top_p", "sample"):
        assert again.sample(3, strategy, seed=1, max_len=12) == vae.sample(3, strategy, seed=1, max_len=12)
    proc = subprocess.run([sys.executable, "-m", "vae_text.sample", f"checkpoint={run}", "n=3",
                           "decoding=beam", "beam_size=3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    numbered = [line for line in proc.stdout.splitlines() if line.strip()[:2].rstrip(".").isdigit()]
    assert len(numbered) == 3


@pytest.mark.parametrize("name", ["ptb_transformer", "ptb_transformer_fb"])
def test_transformer_experiments_compose(name):
    s = train_settings(compose_cfg([f"+experiment={name}"]))
    assert (s.model.decoder, s.model.encoder, s.model.decoder_hidden) == ("transformer", "lstm", 128)
    assert s.model.decoder_args["tie_embeddings"] is True and s.data.dir.endswith("ptb")
    assert s.objective.free_bits == (8.0 if name.endswith("fb") else 0.0)
    first = (ROOT / "conf" / "experiment" / f"{name}.yaml").read_text().splitlines()[:8]
    assert any(f"python -m vae_text.train +experiment={name}" in line for line in first)
