import json

import pytest
import torch

from conftest import CONF, compose_cfg, tiny_overrides
from vae_text.config import ModelConfig
from vae_text.data.corpus import Vocab
from vae_text.model.textvae import build_model, word_dropout_rate
from vae_text.remedies import (
    aggressive_encoder_updates,
    encoder_parameters,
    reinitialize_decoder,
    update_only,
)
from vae_text.run.checkpoint import load_checkpoint
from vae_text.run.parts import train_settings
from vae_text.train import train

V = 19
VOCAB = Vocab(["<pad>", "<bos>", "<eos>", "<unk>"] + [f"w{i}" for i in range(V - 4)])


def model_and_batch(**kw):
    torch.manual_seed(0)
    model = build_model(ModelConfig(embed_size=7, encoder_hidden=9, latent_size=5, decoder_hidden=11,
                                    **kw), VOCAB)
    lengths = torch.tensor([4, 6, 3, 5, 2, 6, 4, 3])  # batch 8
    tokens = torch.zeros(8, 6, dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        tokens[i, : n - 1] = torch.randint(4, V, (n - 1,))
        tokens[i, n - 1] = 2
    return model, tokens, lengths


def snapshot(params):
    return [p.detach().clone() for p in params]


def decoder_params(model):
    return list(model.decoder.parameters())


def test_bn_vae_batch_mu_has_the_configured_mean_and_scale():
    model, tokens, lengths = model_and_batch(bn_gamma=0.6)
    with torch.no_grad():
        model.head.mu_bn.bias.fill_(0.25)
        model.head.linear.weight.mul_(50)  # pre-BN spread >> BatchNorm's eps
    mu = model.train().encode(tokens, lengths).mean
    torch.testing.assert_close(mu.mean(0), torch.full((5,), 0.25), atol=1e-5, rtol=0)
    torch.testing.assert_close(mu.var(0, unbiased=False), torch.full((5,), 0.36), atol=1e-3, rtol=0)
    assert not model.head.mu_bn.weight.requires_grad  # gamma is fixed, the shift is learnt
    assert model.head.mu_bn.bias.requires_grad


def test_aggressive_inner_loop_changes_only_encoder_parameters():
    model, tokens, lengths = model_and_batch()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    dec_before, enc_before = snapshot(decoder_params(model)), snapshot(encoder_parameters(model))

    def loss_fn(_):
        out = model(tokens, lengths)
        return out.rec.mean() + out.kl.sum(-1).mean()

    steps = aggressive_encoder_updates(model, opt, lambda i: None, loss_fn, clip_norm=5.0,
                                       max_inner=30, check_every=5)
    assert 5 <= steps <= 30
    assert all(torch.equal(a, b) for a, b in zip(dec_before, decoder_params(model)))
    assert all(not torch.equal(a, b) for a, b in zip(enc_before, encoder_parameters(model)))
    assert all(p not in opt.state for p in decoder_params(model))  # decoder Adam state untouched
    # the outer step in aggressive mode: decoder only
    enc_before = snapshot(encoder_parameters(model))
    opt.zero_grad()
    loss_fn(None).backward()
    update_only(model, "decoder")
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(enc_before, encoder_parameters(model)))
    assert not torch.equal(dec_before[0], decoder_params(model)[0])


def test_aggressive_inner_loop_stops_when_the_loss_stops_improving():
    model, tokens, lengths = model_and_batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # nothing changes: no improvement
    steps = aggressive_encoder_updates(model, opt, lambda i: None,
                                       lambda _: model(tokens, lengths).rec.mean(), None,
                                       max_inner=100, check_every=4)
    assert steps == 8  # two windows: the second is no better than the first


def test_reinitialized_decoder_differs_and_encoder_is_kept():
    model, _, _ = model_and_batch()
    dec_before, enc_before = snapshot(decoder_params(model)), snapshot(encoder_parameters(model))
    reinitialize_decoder(model)
    assert all(not torch.equal(a, b) for a, b in zip(dec_before, decoder_params(model)))
    assert all(torch.equal(a, b) for a, b in zip(enc_before, encoder_parameters(model)))


def test_word_dropout_annealing():
    assert word_dropout_rate(500, 0.3, None, 1000) == 0.3
    assert word_dropout_rate(0, 0.5, 0.1, 1000) == 0.5
    assert word_dropout_rate(500, 0.5, 0.1, 1000) == pytest.approx(0.3)
    assert word_dropout_rate(5000, 0.5, 0.1, 1000) == pytest.approx(0.1)


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_pretraining_is_one_command_with_two_phases(corpus_dir, tmp_path):
    run = tmp_path / "run"
    results = train(compose_cfg(tiny_overrides(
        corpus_dir, "remedy.pretrain_epochs=2", "train.epochs=2", "objective.free_bits=3")), run)
    assert results["epochs"] == 4
    ae = load_checkpoint(run, "pretrained.pt")
    best = load_checkpoint(run, "best.pt")
    assert ae["remedies"]["pretrain"]["active"] and ae["state"]["epoch"] == 2
    assert (not best["remedies"]["pretrain"]["active"]
            and best["state"]["phase_start"] == ae["state"]["step"])
    for key, value in ae["model"].items():  # the VAE phase starts from a fresh decoder
        if key.startswith("decoder."):
            assert not torch.equal(value, best["model"][key]), key
    rows = records(run)
    pre = [r for r in rows if r.get("train/beta") is not None and r["step"] <= ae["state"]["step"]]
    assert pre and all(r["train/beta"] == 0.0 for r in pre)
    assert [r.get("val/pretraining", 0) for r in rows if "val/rec" in r] == [1, 1, 0, 0]


def test_aggressive_run_logs_inner_steps_and_its_switch(corpus_dir, tmp_path):
    run = tmp_path / "run"
    train(compose_cfg(tiny_overrides(corpus_dir, "remedy.aggressive=true",
                                     "remedy.aggressive_max_inner=6",
                                     "remedy.aggressive_check_every=2", "train.epochs=3")), run)
    rows = records(run)
    assert any(r.get("train/inner_steps", 0) > 0 for r in rows)
    flags = [r["val/aggressive"] for r in rows if "val/aggressive" in r]
    assert len(flags) == 3 and flags == sorted(flags, reverse=True)  # once off, it stays off


def test_lm_with_aggressive_is_a_config_error(corpus_dir):
    from vae_text.core.errors import ConfigError

    with pytest.raises(ConfigError, match="model.kind=lm has none"):
        train_settings(compose_cfg(tiny_overrides(corpus_dir, "model=lm", "remedy.aggressive=true")))


EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_runs_a_few_steps_on_a_tiny_corpus(name, corpus_dir, tmp_path):
    overrides = [f"+experiment={name}", f"data.dir={corpus_dir}", f"data.cache_dir={tmp_path}/c",
                 "data.hub=null", "data.max_sentences=21", "train.batch_size=7", "train.epochs=1",
                 "train.progress=false", "train.num_threads=1", "eval.iw_samples=3"]
    if compose_cfg(overrides).tokenizer.kind == "sentencepiece":  # the toy corpus has ~40 characters
        overrides.append("tokenizer.vocab_size=30")
    results = train(compose_cfg(overrides), tmp_path / "run")
    assert results["steps"] >= 3 and (tmp_path / "run" / "eval_test.json").is_file()


def test_pretraining_to_convergence_ends_its_phase_on_lr_decays(corpus_dir, tmp_path):
    # The published recipe: the autoencoder phase is a run of its own (best val rec, the lr
    # plateau rule) that ends at its lr decays, well before its epoch cap; the VAE phase then has
    # its own train.epochs and its own decays.
    run = tmp_path / "run"
    results = train(compose_cfg(tiny_overrides(
        corpus_dir, "remedy.pretrain_epochs=30", "remedy.pretrain_converge=true",
        "optim=sgd", "optim.lr=2.0", "optim.plateau_factor=0.5", "optim.plateau_patience=0",
        "optim.plateau_reload_best=true", "train.max_lr_decays=1", "train.epochs=3",
        "eval.iw_samples=0")), run)
    ae = load_checkpoint(run, "pretrained.pt")
    ae_epochs = ae["state"]["epoch"]
    assert 1 <= ae_epochs < 30
    assert ae_epochs < results["epochs"] <= ae_epochs + 3
    rows = [r for r in records(run) if "val/rec" in r]
    pre = [r for r in rows if r.get("val/pretraining")]
    assert len(pre) == ae_epochs and len(rows) == results["epochs"]
    # the phase went on from its best autoencoder: the saved encoder is the best val rec's
    best_rec = min(r["val/rec"] for r in pre)
    assert best_rec < pre[-1]["val/rec"] or pre[-1]["val/rec"] == best_rec
    assert [r["val/lr"] for r in pre][0] == 2.0 and rows[ae_epochs]["val/lr"] == 2.0  # fresh VAE lr


def test_bn_vae_trains_through_a_batch_of_one_sentence(corpus_dir, tmp_path):
    # 120 training sentences in batches of 7 leave a last batch of one: BatchNorm has no batch
    # statistics for it, so that sentence is normalised with the running ones
    r = train(compose_cfg(tiny_overrides(corpus_dir, "model.bn_gamma=0.6", "train.epochs=1",
                                         "eval.iw_samples=0")), tmp_path / "run")
    assert r["epochs"] == 1 and r["test"]["kl"] > 0
    model, tokens, lengths = model_and_batch(bn_gamma=0.6)
    model.train()
    one = model.encode(tokens[:1], lengths[:1]).mean
    model.eval()
    assert torch.allclose(one, model.encode(tokens[:1], lengths[:1]).mean)
