"""Every latent family through the one protocol: the metrics (IW-NLL, MI, AU, kl_per_dim), a
smoke training run on the tiny corpus, saving and loading, and the config checks that refuse
combinations that would mean something else."""

import math

import pytest
import torch

from conftest import compose_cfg, fit_tiny, tiny_overrides
from vae_text.config import EvalConfig, ModelConfig
from vae_text.core.errors import ConfigError
from vae_text.data.corpus import BOS, EOS, PAD, UNK, Vocab, collate, encode_split
from vae_text.metrics import batch_elbo, evaluate, iw_log_likelihood, mutual_information
from vae_text.model.latent import POSTERIORS, PRIORS, kl_per_dimension
from vae_text.model.textvae import build_model
from vae_text.run.parts import check_model, train_settings
from vae_text.train import train

# Options that make an entry small (or its posterior sharp) for these tests; an entry not named
# here runs with its defaults, so a posterior or prior added to the registries is in every test
# below with no edit.
TEST_OPTIONS = {"vmf": {"kappa": 8.0}, "iaf": {"steps": 2}, "mog": {"components": 3},
                "vamp": {"components": 3, "length": 2}}


def fits(posterior: str, prior: str) -> bool:
    """Whether the pair is a valid model (a prior on the posterior's space): the config's rule."""
    try:
        check_model(ModelConfig(posterior=posterior, prior=prior))
    except ConfigError:
        return False
    return True


# name: (posterior, prior, posterior_args, prior_args): every posterior with every prior that
# fits it, from the registries, and a learned concentration
FAMILIES = {f"{q}+{p}": (q, p, TEST_OPTIONS.get(q, {}), TEST_OPTIONS.get(p, {}))
            for q in sorted(POSTERIORS) for p in sorted(PRIORS) if fits(q, p)}
FAMILIES["vmf_learned+uniform_sphere"] = ("vmf", "uniform_sphere", {"kappa": 8.0, "learn_kappa": True}, {})
WORDS = ["a", "b", "c", "d"]


def small_vae(family: str, latent_size=3, steps=40):
    posterior, prior, q_args, p_args = FAMILIES[family]
    torch.manual_seed(0)
    vocab = Vocab([PAD, BOS, EOS, UNK, *WORDS])
    split = encode_split([["a"], ["b", "c"], ["c", "d", "a"], ["d", "b"], ["a", "a"]], vocab)
    cfg = ModelConfig(embed_size=5, encoder_hidden=9, latent_size=latent_size, decoder_hidden=8,
                      posterior=posterior, prior=prior, posterior_args=q_args, prior_args=p_args)
    model = build_model(cfg, vocab)
    batch = collate(split, torch.arange(len(split)))
    return fit_tiny(model, batch, steps), batch, split


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_iw_nll_at_one_sample_is_the_negative_elbo_in_expectation_and_k_tightens_it(family):
    model, batch, _ = small_vae(family)
    seeds = range(200)
    neg_elbo = torch.stack([(lambda r, k, _: r + k.sum(-1))(*batch_elbo(model, batch, s)) for s in seeds])
    iw1 = -torch.stack([iw_log_likelihood(model, batch, 1, seed=s) for s in seeds]).float()  # (S, B)
    diff = iw1.mean(0) - neg_elbo.mean(0)
    err = (iw1.var(0) / len(seeds) + neg_elbo.var(0) / len(seeds)).sqrt()
    assert torch.all(diff.abs() < 4 * err + 1e-4), (diff, err)
    # K = 20 is at least as tight, sentence by sentence (within the Monte-Carlo error), and
    # tighter over the batch
    iw = -torch.stack([iw_log_likelihood(model, batch, 20, seed=s) for s in range(20)])
    gap = iw.mean(0) - neg_elbo.mean(0)
    gap_err = (iw.var(0) / 20 + neg_elbo.var(0) / len(seeds)).sqrt()
    assert torch.all(gap < 4 * gap_err), (gap, gap_err)
    assert gap.sum() < 0


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_evaluation_builds_no_autograd_graph(family):
    """With gradients on, an IAF's whole-set MI (Z x T MADE passes for every pair of sentences)
    once recorded a graph through the flow's weights and ran a PTB validation out of memory."""
    model, _, split = small_vae(family, steps=0)
    grad_seen = []
    hooks = [m.register_forward_hook(lambda *_: grad_seen.append(torch.is_grad_enabled()))
             for m in model.modules()]
    assert torch.is_grad_enabled()
    out = evaluate(model, split, Vocab([PAD, BOS, EOS, UNK, *WORDS]),
                   EvalConfig(iw_samples=3, progress=False), full=True)
    for hook in hooks:
        hook.remove()
    assert grad_seen and not any(grad_seen)  # modules ran, none of them with gradients
    assert math.isfinite(out["mi"]) and torch.is_grad_enabled()  # the caller's mode is restored


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_goes_through_the_metrics_without_special_cases(family):
    model, _, split = small_vae(family)
    out = evaluate(model, split, cfg=EvalConfig(iw_samples=20, progress=False), full=False)
    assert math.isfinite(out["mi"]) and 0 <= out["au"] <= 3 and math.isfinite(out["nll_iw"])
    posterior, prior = FAMILIES[family][:2]  # a per-dimension KL only where it has a closed form
    assert ("kl_per_dim" in out) == (kl_per_dimension(POSTERIORS[posterior], PRIORS[prior]) is True)
    assert out["neg_elbo"] == pytest.approx(out["rec"] + out["kl"])
    # MI through the posterior objects equals the formula on all pairs, written out
    with torch.no_grad():
        q = model.encode(collate(split, torch.arange(len(split))).tokens,
                         collate(split, torch.arange(len(split))).lengths)
        z = q.rsample(generator=torch.Generator().manual_seed(0))
        pairs = q.log_prob(z[:, None])  # (N, N): log q(z_i | x_j)
        own = torch.diagonal(pairs)  # both terms at the same sample, whatever the family
        expected = own.mean() - (torch.logsumexp(pairs, 1) - math.log(len(split))).mean()
    with torch.no_grad():
        assert mutual_information(q, z) == pytest.approx(float(expected), abs=1e-4)


def test_vmf_with_fixed_kappa_has_a_constant_kl_whatever_the_encoder_does():
    model, batch, split = small_vae("vmf+uniform_sphere")
    out = evaluate(model, split, cfg=EvalConfig(iw_samples=5, progress=False), full=False)
    from vae_text.model.latent.vmf import UniformSphere, VonMisesFisher

    expected = VonMisesFisher(torch.tensor([[1.0, 0, 0]]), torch.tensor([8.0])).kl(UniformSphere(3))
    assert out["kl"] == pytest.approx(expected.item(), rel=1e-5)
    # AU: the variance of E_q[z] = A_3(8) mu, A_3(k) = coth k - 1/k
    q = model.encode(batch.tokens, batch.lengths)
    a = 1 / math.tanh(8.0) - 1 / 8.0
    torch.testing.assert_close(q.mean, a * q.mu)


@pytest.mark.parametrize("experiment", ["ptb_vmf", "ptb_vamp", "ptb_mog", "ptb_iaf"])
def test_each_family_trains_end_to_end_on_the_tiny_corpus_and_reloads(experiment, corpus_dir, tmp_path):
    from vae_text.pipeline import TextVAEPipeline

    model = compose_cfg([f"+experiment={experiment}"]).model
    overrides = tiny_overrides(corpus_dir, f"model.posterior={model.posterior}",
                               f"model.prior={model.prior}", "train.epochs=1", "eval.iw_samples=3",
                               "data.max_sentences=60", "eval.reconstruct=false")
    if model.prior == "vamp":
        overrides.append("+model.prior_args.components=4")
    result = train(compose_cfg(overrides), tmp_path / experiment)["test"]
    assert all(math.isfinite(result[k]) for k in ("rec", "kl", "nll_iw", "mi"))
    assert "kl_per_dim" not in result and result["nll_iw"] <= result["neg_elbo"] + 1.0
    vae = TextVAEPipeline.load(tmp_path / experiment, device="cpu")
    assert isinstance(vae.model.prior, PRIORS[model.prior])
    assert isinstance(vae.model.head, POSTERIORS[model.posterior])
    assert len(vae.sample(2, seed=0)) == 2
    assert vae.encode(["cat sees dog", "dog"]).mean.shape == (2, 6)


def test_configs_that_would_mean_something_else_are_refused():
    with pytest.raises(ConfigError, match=r"model\.prior=standard_normal lives on real"):
        check_model(ModelConfig(posterior="vmf"))
    with pytest.raises(ConfigError, match=r"model\.prior=uniform_sphere"):
        check_model(ModelConfig(prior="uniform_sphere"))
    check_model(ModelConfig(posterior="vmf", prior="vamp"))  # a mixture of vMFs lives on the sphere
    with pytest.raises(ConfigError, match=r"model\.latent_size=1 is invalid for model\.posterior=vmf"):
        build_model(ModelConfig(posterior="vmf", prior="uniform_sphere", latent_size=1),
                    Vocab([PAD, BOS, EOS, UNK]))
    for overrides in (["model.posterior=vmf", "model.prior=uniform_sphere"], ["model.prior=mog"],
                      ["model.posterior=iaf"]):
        for mode in ("dim", "element"):
            cfg = compose_cfg([*overrides, "objective.free_bits=2", f"objective.free_bits_mode={mode}"])
            with pytest.raises(ConfigError, match=rf"objective\.free_bits_mode={mode} needs a KL per") as err:
                train_settings(cfg)
            assert "\n" not in str(err.value)
        train_settings(compose_cfg([*overrides, "objective.free_bits=2",
                                             "objective.free_bits_mode=sentence"]))
    train_settings(compose_cfg(["objective.free_bits=2", "objective.free_bits_mode=dim"]))
    train_settings(compose_cfg(["model.prior=mog", "objective.free_bits_mode=dim"]))  # off
