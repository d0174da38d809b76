"""The latent distributions (vae_text.model.latent): each formula against torch.distributions, a closed
form or a Monte-Carlo estimate; the registries; and a prior added from outside the package that
trains end to end without an edit anywhere else."""

import dataclasses
import math

import pytest
import torch
from torch import Tensor

from conftest import compose_cfg, fit_tiny, tiny_overrides
from vae_text.config import ModelConfig
from vae_text.core.errors import ConfigError
from vae_text.data.corpus import BOS, EOS, PAD, UNK, Vocab, collate, encode_split
from vae_text.metrics import batch_elbo, iw_log_likelihood, mutual_information, sentence_noise
from vae_text.model import latent
from vae_text.model.latent import (
    POSTERIORS,
    PRIORS,
    DiagonalGaussian,
    GaussianHead,
    Prior,
    StandardNormal,
    gaussian_kl,
    kl_term,
    register_kl,
)
from vae_text.model.textvae import build_model
from vae_text.run.parts import check_model
from vae_text.train import train

B, Z = 5, 3  # batch and latent: different sizes


def gaussian(seed=0, b=B, z=Z, dtype=torch.float64) -> DiagonalGaussian:
    g = torch.Generator().manual_seed(seed)
    return DiagonalGaussian(torch.randn(b, z, generator=g, dtype=dtype),
                            torch.randn(b, z, generator=g, dtype=dtype) - 0.5)


def normal(q: DiagonalGaussian) -> torch.distributions.Normal:
    return torch.distributions.Normal(q.mu, (0.5 * q.logvar).exp())


def test_gaussian_kl_matches_torch_distributions_and_monte_carlo():
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    ours = gaussian_kl(mu, logvar)  # (5, 3) per dimension
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(ours, torch.distributions.kl_divergence(q, p))
    z = q.sample((200_000,))  # Monte Carlo: E_q[log q(z) - log p(z)]
    mc = (q.log_prob(z) - p.log_prob(z)).mean(0)
    torch.testing.assert_close(ours, mc, atol=0.03, rtol=0.02)


def test_gaussian_kl_hand_values():
    assert gaussian_kl(torch.tensor(0.0), torch.tensor(0.0)).item() == 0.0
    # mu = 2, sigma = 1: KL = mu^2 / 2 = 2
    assert gaussian_kl(torch.tensor(2.0), torch.tensor(0.0)).item() == pytest.approx(2.0)
    # mu = 0, sigma^2 = e: 0.5 (e - 1 - 1)
    assert gaussian_kl(torch.tensor(0.0), torch.tensor(1.0)).item() == pytest.approx(0.5 * (math.e - 2))


def test_gaussian_log_prob_entropy_and_samples_match_torch_distributions():
    q, ref = gaussian(), normal(gaussian())
    z = ref.sample((7,))  # (S, B, Z)
    torch.testing.assert_close(q.log_prob(z), ref.log_prob(z).sum(-1))  # (7, B)
    torch.testing.assert_close(q.entropy(), ref.entropy().sum(-1))
    eps = torch.randn(4, B, Z, dtype=torch.float64)
    torch.testing.assert_close(q.rsample(eps=eps), ref.loc + ref.scale * eps)  # z = mu + sigma eps
    torch.testing.assert_close(q.rsample(eps=eps), q.rsample(eps=eps), rtol=0, atol=0)
    a = q.rsample((6,), generator=torch.Generator().manual_seed(3))
    b = q.rsample((6,), generator=torch.Generator().manual_seed(3))
    assert a.shape == (6, B, Z) and torch.equal(a, b)
    # 200k samples: their moments are q's
    many = q.rsample((200_000,), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(many.mean(0), q.mu, atol=0.02, rtol=0)
    torch.testing.assert_close(many.var(0).log(), q.logvar, atol=0.02, rtol=0)
    p = StandardNormal(Z)
    std = torch.distributions.Normal(0.0, 1.0)
    torch.testing.assert_close(p.log_prob(z), std.log_prob(z).sum(-1))
    draws = p.sample(100_000, torch.Generator().manual_seed(0))
    assert draws.shape == (100_000, Z)
    torch.testing.assert_close(draws.mean(0), torch.zeros(Z), atol=0.02, rtol=0)
    torch.testing.assert_close(draws.std(0), torch.ones(Z), atol=0.02, rtol=0)


def test_log_prob_of_every_pair_against_a_concatenated_set():
    parts = [gaussian(0, b=2), gaussian(1, b=4), gaussian(2, b=1)]
    whole = DiagonalGaussian.cat(parts)  # 7 sentences
    assert len(whole) == 7
    torch.testing.assert_close(whole.index(slice(2, 6)).mu, parts[1].mu)
    z = torch.randn(3, Z, dtype=torch.float64)
    pairs = whole.log_prob(z[:, None])  # (3, 7): log q(z_i | x_j)
    assert pairs.shape == (3, 7)
    for i in range(3):
        for j in range(7):
            one = whole.index(slice(j, j + 1))
            torch.testing.assert_close(pairs[i, j], one.log_prob(z[i:i + 1])[0])
    assert whole.map(torch.Tensor.float).mu.dtype == torch.float32


def test_closed_form_kl_equals_the_monte_carlo_estimate():
    q, p = gaussian(), StandardNormal(Z)
    closed = q.kl(p)  # (B, Z)
    torch.testing.assert_close(closed, torch.distributions.kl_divergence(normal(q), torch.distributions.Normal(0.0, 1.0)))
    z = q.rsample((100_000,), generator=torch.Generator().manual_seed(0))  # (S, B, Z)
    samples = q.kl_estimate(p, z)  # (S, B): single-sample estimates of the total KL
    mc, err = samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])
    assert torch.all((mc - closed.sum(-1)).abs() < 4 * err)
    # without a closed form the objective's KL is that estimate at the decoder's sample, (B, 1)
    wide = _ScaledNormal(Z, scale=2.0)
    assert q.kl(wide) is None
    one = q.rsample(generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(kl_term(q, wide, one), (q.log_prob(one) - wide.log_prob(one))[:, None])
    torch.testing.assert_close(kl_term(q, p, one), closed)


def test_mutual_information_through_posteriors_equals_the_mu_logvar_formula():
    """The estimator written out with mu/logvar, on the same numbers: both terms at the sample
    (log q(z_i|x_i) is the diagonal of the pairs' matrix)."""
    g = torch.Generator().manual_seed(0)
    n = 300
    mu, logvar = 0.8 * torch.randn(n, Z, generator=g), torch.randn(n, Z, generator=g) * 0.3 - 1
    z = mu + torch.exp(0.5 * logvar) * torch.randn(n, Z, generator=g)
    m, lv, zz = mu.double(), logvar.double(), z.double()
    log_q = -0.5 * (math.log(2 * math.pi) + lv[None] + (zz[:, None] - m[None]).pow(2) / lv[None].exp()).sum(-1)
    own = -0.5 * (math.log(2 * math.pi) + lv + (zz - m).pow(2) / lv.exp()).sum(-1)
    expected = float(own.mean() - (torch.logsumexp(log_q, 1) - math.log(n)).mean())
    assert mutual_information(DiagonalGaussian(mu, logvar), z) == pytest.approx(expected, rel=1e-12)
    assert mutual_information(DiagonalGaussian(mu, logvar), z, chunk=7) == pytest.approx(expected, rel=1e-12)


WORDS = ["a", "b", "c", "d"]


def small_vae(latent_size=2, steps=60):
    torch.manual_seed(0)
    vocab = Vocab([PAD, BOS, EOS, UNK, *WORDS])
    split = encode_split([["a"], ["b", "c"], ["c", "d", "a"], ["d", "b"]], vocab)
    model = build_model(ModelConfig(embed_size=5, encoder_hidden=9, latent_size=latent_size,
                                    decoder_hidden=8), vocab)
    batch = collate(split, torch.arange(len(split)))
    return fit_tiny(model, batch, steps), batch


def test_sentence_noise_gives_the_same_z_as_the_formula():
    model, batch = small_vae()
    with torch.no_grad():
        q = model.encode(batch.tokens, batch.lengths)
    eps = sentence_noise(batch.tokens, batch.lengths, 1, q.noise_size, 0, "elbo")[:, 0]
    assert q.noise_size == 2
    torch.testing.assert_close(q.rsample(eps=eps), q.mu + torch.exp(0.5 * q.logvar) * eps, rtol=0, atol=0)


def test_iw_nll_with_one_sample_is_the_negative_elbo_in_expectation_and_bounds_it():
    model, batch = small_vae()
    seeds = range(300)
    neg_elbo = torch.stack([(lambda r, k, _: r + k.sum(-1))(*batch_elbo(model, batch, s)) for s in seeds])
    iw1 = -torch.stack([iw_log_likelihood(model, batch, 1, seed=s) for s in seeds]).float()  # (300, B)
    # the same expectation: the two means differ by less than 4 standard errors, per sentence
    diff = iw1.mean(0) - neg_elbo.mean(0)
    err = (iw1.var(0) / len(seeds) + neg_elbo.var(0) / len(seeds)).sqrt()
    assert torch.all(diff.abs() < 4 * err), (diff, err)
    iw = -torch.stack([iw_log_likelihood(model, batch, 30, seed=s) for s in range(20)]).mean(0)
    assert torch.all(iw < neg_elbo.mean(0))  # a tighter bound than -ELBO, sentence by sentence


# --- registries ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kw,key", [
    (dict(posterior="hyperbolic"), "model.posterior"),
    (dict(prior="flow_prior"), "model.prior"),
    (dict(prior_args={"scale": 2.0}), "model.prior_args.scale"),
    (dict(posterior_args={"kappa": 5}), "model.posterior_args.kappa"),
    (dict(bn_gamma=0.5, posterior_args={"bn_gamma": 0.5}), "model.bn_gamma"),
])
def test_unknown_names_and_options_are_config_errors_naming_the_key(kw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        check_model(ModelConfig(**kw))
    assert "\n" not in str(err.value)


def test_registries_and_defaults():
    assert POSTERIORS["gaussian"] is GaussianHead and PRIORS["standard_normal"] is StandardNormal
    cfg = ModelConfig()
    assert (cfg.posterior, cfg.prior, cfg.posterior_args, cfg.prior_args) == (
        "gaussian", "standard_normal", {}, {})
    composed = compose_cfg(["+experiment=ptb_bn", "model.posterior=gaussian"]).model
    assert composed.posterior == "gaussian" and composed.bn_gamma == 0.6
    assert compose_cfg(["model/prior=standard_normal"]).model.prior == "standard_normal"
    model = build_model(ModelConfig(latent_size=4, bn_gamma=0.6), Vocab([PAD, BOS, EOS, UNK]))
    assert model.head.mu_bn.weight.tolist() == pytest.approx([0.6] * 4)  # bn_gamma reaches the head


# --- a prior from outside the package ------------------------------------------------------------


class _ScaledNormal(Prior):
    """p(z) = N(0, scale^2 I): a prior vae_text does not ship, to prove the protocol open."""

    def __init__(self, latent_size: int, *, scale: float = 1.0):
        super().__init__(latent_size)
        if not scale > 0:
            raise ConfigError(f"model.prior_args.scale={scale!r} is invalid: it must be > 0")
        self.scale = scale

    def log_prob(self, z: Tensor) -> Tensor:
        return torch.distributions.Normal(0.0, self.scale).log_prob(z).sum(-1)

    def sample(self, n, generator=None, device=None):
        return self.scale * torch.randn(n, self.latent_size, generator=generator).to(device or "cpu")


def _scaled_kl(q: DiagonalGaussian, p: _ScaledNormal) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, s^2)) per dimension: log(s / sigma) + (sigma^2 + mu^2) / 2s^2 - 1/2."""
    return (math.log(p.scale) - 0.5 * q.logvar + (q.logvar.exp() + q.mu.pow(2)) / (2 * p.scale**2)
            - 0.5)


def test_a_prior_registered_from_outside_trains_end_to_end(corpus_dir, tmp_path, monkeypatch):
    from vae_text.pipeline import TextVAEPipeline

    monkeypatch.setitem(PRIORS, "scaled_normal", _ScaledNormal)
    overrides = tiny_overrides(corpus_dir, "model.prior=scaled_normal", "+model.prior_args.scale=2.0",
                               "train.epochs=1", "eval.iw_samples=3")
    # no closed-form KL: the loss and the metrics use the single-sample estimate
    mc = train(compose_cfg(overrides), tmp_path / "mc")["test"]
    assert "kl_per_dim" not in mc and math.isfinite(mc["kl"]) and mc["nll_iw"] > 0
    assert mc["neg_elbo"] == pytest.approx(mc["rec"] + mc["kl"])
    vae = TextVAEPipeline.from_pretrained(tmp_path / "mc", device="cpu")
    assert isinstance(vae.model.prior, _ScaledNormal) and vae.model.prior.scale == 2.0
    assert len(vae.sample(3, seed=0)) == 3
    # registering the closed form switches the KL to it, per dimension
    monkeypatch.setattr(latent.base, "_KL", dict(latent.base._KL))
    register_kl(DiagonalGaussian, _ScaledNormal)(_scaled_kl)
    closed = train(compose_cfg(overrides), tmp_path / "closed")["test"]
    assert len(closed["kl_per_dim"]) == 6 and closed["kl"] == pytest.approx(sum(closed["kl_per_dim"]))
    with pytest.raises(ConfigError, match=r"model\.prior_args\.scale"):
        train(compose_cfg([*overrides[:-3], "+model.prior_args.scale=-1"]), tmp_path / "bad")


def test_the_toy_closed_form_kl_agrees_with_monte_carlo():
    q, p = gaussian(), _ScaledNormal(Z, scale=1.7)
    z = q.rsample((200_000,), generator=torch.Generator().manual_seed(0))
    samples = q.kl_estimate(p, z)
    mc, err = samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])
    assert torch.all((mc - _scaled_kl(q, p).sum(-1)).abs() < 4 * err)
    torch.testing.assert_close(_scaled_kl(q, _ScaledNormal(Z, scale=1.0)), gaussian_kl(q.mu, q.logvar))


def test_output_carries_the_posterior_and_its_sample():
    model, batch = small_vae(steps=0)
    out = model(batch.tokens, batch.lengths, eps=torch.zeros(len(batch), model.noise_size))
    assert dataclasses.is_dataclass(out.posterior)
    torch.testing.assert_close(out.z, out.posterior.mean)  # eps = 0
    torch.testing.assert_close(out.kl, out.posterior.kl(model.prior))


def test_kl_per_dimension_plot_needs_a_closed_form():
    from vae_text.reports.viz import plot_kl_per_dim

    ax = plot_kl_per_dim(gaussian(), StandardNormal(Z))
    assert [p.get_height() for p in ax.patches] == pytest.approx(gaussian().kl(StandardNormal(Z)).mean(0).tolist())
    with pytest.raises(ValueError, match="no closed-form KL per dimension"):
        plot_kl_per_dim(gaussian(), _ScaledNormal(Z, scale=2.0))
