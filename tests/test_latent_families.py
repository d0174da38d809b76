"""The latent families beyond the Gaussian (vMF + uniform sphere, mixture of Gaussians, VampPrior,
IAF): each formula against an independent computation (scipy, quadrature, Monte Carlo, brute-force
Jacobians). The metrics and training with every family are in test_latent_protocol.py."""

import math

import numpy as np
import pytest
import scipy.special as sp
import torch
from torch.nn import functional as F

from vae_text.config import ModelConfig
from vae_text.data.corpus import BOS, EOS, PAD, UNK, Vocab
from vae_text.model.latent import DiagonalGaussian, StandardNormal, gaussian_kl
from vae_text.model.latent.flow import IAFHead
from vae_text.model.latent.mixture import MixtureOfGaussians, VampPrior
from vae_text.model.latent.vmf import (
    UniformSphere,
    VMFHead,
    VonMisesFisher,
    bessel_ratio,
    log_bessel_iv,
    log_sphere_area,
    vmf_log_normalizer,
    vmf_uniform_kl,
)
from vae_text.model.textvae import build_model

F64 = torch.float64


def vmf(d, kappa, b=3, seed=0) -> VonMisesFisher:
    g = torch.Generator().manual_seed(seed)
    mu = F.normalize(torch.randn(b, d, generator=g, dtype=F64), dim=-1)
    return VonMisesFisher(mu, torch.full((b,), float(kappa), dtype=F64))


def reference_log_iv(nu: float, x: np.ndarray) -> np.ndarray:
    """log I_nu(x) from scipy's exp-scaled ive; where ive underflows (large nu, x small beside
    it) the power series sum_k (x/2)^(2k+nu) / (k! Gamma(k+nu+1)), summed in logs."""
    with np.errstate(divide="ignore"):
        ref = np.log(sp.ive(nu, x)) + x
    k = np.arange(2000)[:, None]
    terms = (2 * k + nu) * np.log(x / 2) - sp.gammaln(k + 1) - sp.gammaln(k + nu + 1)
    return np.where(np.isfinite(ref), ref, sp.logsumexp(terms, axis=0))


# --- vMF ----------------------------------------------------------------------------------------


def test_log_bessel_matches_scipy_over_a_grid_with_large_orders_and_arguments():
    x = np.array([1e-4, 0.03, 0.7, 1.0, 4.5, 30.0, 80.0, 333.0, 2e3, 5e4, 1e6])
    for nu in [0.0, 0.5, 1.0, 2.5, 7.0, 15.0, 31.5, 49.0, 127.0, 511.0, 2000.0]:
        ours = log_bessel_iv(nu, torch.tensor(x, dtype=F64)).numpy()
        ref = reference_log_iv(nu, x)
        np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9, err_msg=f"nu={nu}")
        ratio = bessel_ratio(nu, torch.tensor(x, dtype=F64)).numpy()
        np.testing.assert_allclose(ratio, np.exp(reference_log_iv(nu + 1, x) - ref), rtol=1e-7,
                                   err_msg=f"nu={nu}")
    # float32 input stays finite where I_nu itself overflows float32
    assert torch.isfinite(log_bessel_iv(15.0, torch.tensor([1e5], dtype=torch.float32))).all()


def test_vmf_log_normaliser_against_scipy_and_gradients_against_finite_differences():
    for d in [2, 3, 10, 32, 100, 1000]:
        kappa = np.array([0.05, 1.0, 12.0, 80.0, 500.0, 1e4])
        ref = (d / 2 - 1) * np.log(kappa) - d / 2 * np.log(2 * np.pi) - reference_log_iv(d / 2 - 1, kappa)
        ours = vmf_log_normalizer(d, torch.tensor(kappa, dtype=F64)).numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-8, err_msg=f"d={d}")
    kappa = torch.tensor([0.3, 5.0, 80.0, 900.0], dtype=F64, requires_grad=True)
    for nu in (0.0, 15.0, 49.5):
        assert torch.autograd.gradcheck(lambda k, nu=nu: log_bessel_iv(nu, k), (kappa,))
        assert torch.autograd.gradcheck(lambda k, nu=nu: bessel_ratio(nu, k), (kappa,))


@pytest.mark.parametrize("d,kappa", [(2, 1.0), (3, 10.0), (7, 0.4), (32, 80.0), (100, 300.0)])
def test_vmf_samples_have_the_theoretical_moments(d, kappa):
    """E[mu^T z] = A_d(kappa) and E[(mu^T z)^2] = 1 - (d - 1) A_d(kappa) / kappa, within 4
    standard errors; every sample on the sphere; the mean is A_d mu."""
    q = vmf(d, kappa)
    z = q.rsample((20_000,), generator=torch.Generator().manual_seed(1))  # (S, B, d)
    assert z.shape == (20_000, 3, d)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(20_000, 3, dtype=F64))
    w = (z * q.mu).sum(-1)
    a = float(sp.ive(d / 2, kappa) / sp.ive(d / 2 - 1, kappa))
    for stat, expected in ((w, a), (w * w, 1 - (d - 1) * a / kappa)):
        err = stat.std(0) / math.sqrt(stat.shape[0])
        assert torch.all((stat.mean(0) - expected).abs() < 4 * err), (stat.mean(0), expected)
    torch.testing.assert_close(q.mean, a * q.mu)
    # the component orthogonal to mu has no preferred direction: its mean is 0
    orth = z - w[..., None] * q.mu
    assert orth.mean(0).abs().max() < 4 * orth.std(0).max() / math.sqrt(20_000)


def test_vmf_same_noise_same_sample_and_gradients_reach_mu():
    q = vmf(5, 20.0)
    eps = torch.randn(4, 3, q.noise_size, dtype=F64)
    assert torch.equal(q.rsample(eps=eps), q.rsample(eps=eps))
    mu = q.mu.clone().requires_grad_(True)
    z = VonMisesFisher(mu, q.kappa).rsample(eps=eps)
    (z * torch.arange(5, dtype=F64)).sum().backward()
    assert mu.grad.abs().sum() > 0
    # noise whose proposals are all rejected still gives a sample, the same one every time
    stuck = eps.clone()  # d - 1 = 4 normals for v, then tries of d normals + the one of u
    stuck[..., 9::6] = 40.0  # u = Phi(40) = 1: every proposal is rejected
    a, b = q.rsample(eps=stuck), q.rsample(eps=stuck)
    assert torch.equal(a, b) and torch.allclose(a.norm(dim=-1), torch.ones(4, 3, dtype=F64))


def test_vmf_kl_closed_form_against_monte_carlo_and_hand_values():
    for d, kappa in [(2, 1.0), (16, 30.0), (32, 80.0)]:
        q, p = vmf(d, kappa), UniformSphere(d)
        closed = q.kl(p)
        assert closed.shape == (3, 1)
        # a constant: the same for every mean direction
        torch.testing.assert_close(closed, closed[:1].expand(3, 1))
        z = q.rsample((40_000,), generator=torch.Generator().manual_seed(2))
        samples = q.kl_estimate(p, z)
        err = samples.std(0) / math.sqrt(samples.shape[0])
        assert torch.all((samples.mean(0) - closed[:, 0]).abs() < 4 * err + 1e-9)
        torch.testing.assert_close(q.entropy(), log_sphere_area(d) - closed[:, 0])
    # the surface of S^1 is 2 pi, of S^2 4 pi
    assert log_sphere_area(2) == pytest.approx(math.log(2 * math.pi))
    assert log_sphere_area(3) == pytest.approx(math.log(4 * math.pi))
    # d = 3 in closed form: log C = log kappa - log(4 pi sinh kappa), A = coth kappa - 1 / kappa
    k = 2.5
    expected = k * (1 / math.tanh(k) - 1 / k) + math.log(k / (4 * math.pi * math.sinh(k))) + math.log(4 * math.pi)
    assert vmf_uniform_kl(vmf(3, k), UniformSphere(3))[0, 0].item() == pytest.approx(expected, rel=1e-10)


def test_vmf_density_integrates_to_one_on_the_circle_and_the_prior_samples_uniformly():
    q = vmf(2, 6.0, b=2)
    theta = torch.linspace(0, 2 * math.pi, 20_001, dtype=F64)[:-1]
    z = torch.stack([theta.cos(), theta.sin()], -1)[:, None]  # (n, 1, 2)
    mass = q.log_prob(z).exp().sum(0) * (2 * math.pi / 20_000)
    torch.testing.assert_close(mass, torch.ones(2, dtype=F64))
    p = UniformSphere(4)
    draws = p.sample(50_000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(draws.norm(dim=-1), torch.ones(50_000))
    torch.testing.assert_close(draws.mean(0), torch.zeros(4), atol=0.02, rtol=0)
    torch.testing.assert_close(draws.pow(2).mean(0), torch.full((4,), 0.25), atol=0.01, rtol=0)
    assert p.log_prob(draws[:3]).tolist() == pytest.approx([-math.log(2 * math.pi**2)] * 3)


def test_vmf_head_fixed_and_learned_kappa():
    h = torch.randn(6, 9)
    fixed = VMFHead(9, 4, kappa=50.0)(h)
    assert fixed.kappa.tolist() == [50.0] * 6
    torch.testing.assert_close(fixed.mu.norm(dim=-1), torch.ones(6))
    head = VMFHead(9, 4, kappa=50.0, learn_kappa=True)
    torch.nn.init.zeros_(head.kappa_linear.weight)
    torch.nn.init.zeros_(head.kappa_linear.bias)
    learned = head(h)
    torch.testing.assert_close(learned.kappa, torch.full((6,), 50.0))  # starts at kappa
    learned.kl(UniformSphere(4)).sum().backward()
    assert head.kappa_linear.bias.grad.item() > 0  # a larger kappa costs more KL


# --- mixture of Gaussians and VampPrior --------------------------------------------------------


def grid_mass(log_prob, dims: int, half: float = 9.0, n: int = 601) -> float:
    t = torch.linspace(-half, half, n, dtype=F64)
    step = (t[1] - t[0]).item()
    pts = torch.cartesian_prod(*[t] * dims).reshape(-1, dims) if dims > 1 else t[:, None]
    with torch.no_grad():
        return float(log_prob(pts).exp().sum() * step**dims)


def test_mixture_of_gaussians_integrates_to_one_and_samples_its_moments():
    torch.manual_seed(0)
    for dims in (1, 2):
        p = MixtureOfGaussians(dims, components=3).double()
        with torch.no_grad():
            p.logits.copy_(torch.tensor([0.3, -1.0, 0.5]))
            p.log_scales.copy_(torch.randn(3, dims) * 0.3)
        assert grid_mass(p.log_prob, dims) == pytest.approx(1.0, abs=1e-6)
    pi = torch.softmax(p.logits, -1).detach()
    means, var = p.means.detach(), (2 * p.log_scales).exp().detach()
    draws = p.sample(200_000, torch.Generator().manual_seed(1)).double()
    mixture_mean = (pi[:, None] * means).sum(0)
    mixture_var = (pi[:, None] * (var + means**2)).sum(0) - mixture_mean**2
    torch.testing.assert_close(draws.mean(0), mixture_mean, atol=0.01, rtol=0)
    torch.testing.assert_close(draws.var(0), mixture_var, atol=0.02, rtol=0.01)


def test_mixture_monte_carlo_kl_is_unbiased_against_the_closed_form_of_one_component():
    g = torch.Generator().manual_seed(0)
    q = DiagonalGaussian(torch.randn(4, 3, generator=g, dtype=F64), torch.randn(4, 3, generator=g, dtype=F64) * 0.5)
    p = MixtureOfGaussians(3, components=1).double()
    with torch.no_grad():
        p.means.zero_()
    assert q.kl(p) is None  # no closed form: the objective uses the estimate
    torch.testing.assert_close(p.log_prob(q.mu), StandardNormal(3).log_prob(q.mu))
    z = q.rsample((100_000,), generator=torch.Generator().manual_seed(1))
    for prior, closed in [(p, gaussian_kl(q.mu, q.logvar).sum(-1))]:
        samples = q.kl_estimate(prior, z)
        err = samples.std(0) / math.sqrt(samples.shape[0])
        assert torch.all((samples.mean(0) - closed).abs() < 4 * err)
    # one shifted, scaled component: KL between two Gaussians in closed form
    with torch.no_grad():
        p.means.copy_(torch.tensor([[0.5, -1.0, 2.0]]))
        p.log_scales.copy_(torch.tensor([[0.2, -0.3, 0.0]]))
    m, ls = p.means[0].detach(), p.log_scales[0].detach()
    closed = (ls - 0.5 * q.logvar + (q.logvar.exp() + (q.mu - m) ** 2) / (2 * (2 * ls).exp()) - 0.5).sum(-1)
    samples = q.kl_estimate(p, z).detach()
    err = samples.std(0) / math.sqrt(samples.shape[0])
    assert torch.all((samples.mean(0) - closed).abs() < 4 * err)


def tiny_model(latent_size=2, **kw):
    torch.manual_seed(0)
    vocab = Vocab([PAD, BOS, EOS, UNK, "a", "b", "c"])
    cfg = ModelConfig(embed_size=5, encoder_hidden=9, latent_size=latent_size, decoder_hidden=8, **kw)
    return build_model(cfg, vocab).double().eval()


def test_vampprior_is_the_mixture_of_its_pseudo_posteriors_and_integrates_to_one():
    model = tiny_model(prior="vamp", prior_args={"components": 4, "length": 3})
    prior = model.prior
    assert isinstance(prior, VampPrior) and prior.pseudo_inputs.shape == (4, 3, 5)
    assert "prior.pseudo_inputs" in model.state_dict()
    assert not any(m is model for m in prior.modules())  # the model is not its submodule
    with torch.no_grad():
        q = prior.pseudo_posterior()
        z = torch.randn(7, 2, dtype=F64)
        by_hand = torch.logsumexp(torch.stack([q.index(slice(k, k + 1)).log_prob(z) for k in range(4)]), 0) - math.log(4)
        torch.testing.assert_close(prior.log_prob(z), by_hand)
        scale = q.mu.abs().max().item() + 6 * (0.5 * q.logvar).exp().max().item()
        assert grid_mass(prior.log_prob, 2, half=scale, n=401) == pytest.approx(1.0, abs=1e-4)
        draws = prior.sample(100_000, torch.Generator().manual_seed(0))
        torch.testing.assert_close(draws.mean(0), q.mu.mean(0), atol=0.02, rtol=0)
    # the gradient of log p(z) reaches the pseudo-inputs and the encoder
    prior.log_prob(torch.randn(3, 2, dtype=F64)).sum().backward()
    assert prior.pseudo_inputs.grad.abs().sum() > 0
    assert model.encoder.lstm.weight_ih_l0.grad.abs().sum() > 0


# --- IAF ----------------------------------------------------------------------------------------


def iaf_head(latent=3, features=7, steps=3, seed=0) -> IAFHead:
    torch.manual_seed(seed)
    head = IAFHead(features, latent, steps=steps, hidden=11).double()
    with torch.no_grad():  # away from the identity-like initialisation
        for p in head.parameters():
            p.normal_(0, 0.4)
    return head


def test_iaf_log_determinant_equals_the_brute_force_jacobian_and_masks_are_autoregressive():
    head = iaf_head()
    h = torch.randn(7, dtype=F64)
    for seed in range(3):
        z0 = torch.randn(3, dtype=F64, generator=torch.Generator().manual_seed(seed))
        jac = torch.autograd.functional.jacobian(lambda x: head.flow(x, h)[0], z0)
        torch.testing.assert_close(head.flow(z0, h)[1], torch.linalg.slogdet(jac)[1])
    made = head.flow.made[0]
    jac = torch.autograd.functional.jacobian(lambda x: torch.cat(made(x, made.context(h))), z0)
    assert torch.all(jac[:3].triu() == 0) and torch.all(jac[3:].triu() == 0)  # i depends on < i


def test_iaf_log_prob_by_inversion_equals_the_forward_path_and_integrates_to_one():
    head = iaf_head(latent=2, features=4)
    q = head(torch.randn(3, 4, dtype=F64))
    z = q.rsample((5,), generator=torch.Generator().manual_seed(0))  # (5, 3, 2)
    fast = q.log_prob(z)  # the sample's own forward pass
    torch.testing.assert_close(q.log_prob(z.clone()), fast)  # inverting the flow
    # every pair: z_i against all posteriors
    pairs = q.log_prob(z[0][:, None])  # (3, 3)
    assert torch.isfinite(pairs).all()
    for j in range(3):
        torch.testing.assert_close(pairs[:, j], q.index(slice(j, j + 1)).log_prob(z[0][:, None])[:, 0])
    one = q.index(slice(1, 2))
    assert grid_mass(lambda x: one.log_prob(x[:, None])[:, 0], 2, half=8.0, n=301) == pytest.approx(1.0, abs=2e-3)


def test_iaf_inverse_by_degree_recovers_the_base_noise_with_and_without_autograd():
    """`MADE.invert` computes each hidden unit once (in order of degree); the inverse must give
    back z_0 of the forward pass, for 5 latents, hidden 11 (degrees 1..4, uneven counts), with and
    without autograd (two code paths), and gradients must flow through it (VampPrior of IAFs)."""
    head = iaf_head(latent=5, features=4, steps=2)
    h = torch.randn(3, 4, dtype=F64)
    z0 = torch.randn(6, 3, 5, dtype=F64, generator=torch.Generator().manual_seed(2))
    z, log_det = head.flow(z0, h)
    with torch.no_grad():
        back, back_det = head.flow.inverse(z, h)
    torch.testing.assert_close(back, z0)
    torch.testing.assert_close(back_det, log_det)
    zz = z.detach().requires_grad_()
    again, _ = head.flow.inverse(zz, h)
    torch.testing.assert_close(again, z0.detach())
    again.sum().backward()
    assert torch.isfinite(zz.grad).all() and zz.grad.abs().sum() > 0
    made = head.flow.made[0]
    assert made.upto == [0, 3, 6, 9, 11]  # hidden 11 over degrees 1..4: 3, 3, 3, 2 units


def test_iaf_density_matches_a_histogram_of_its_samples_in_one_dimension():
    head = iaf_head(latent=1, features=4, steps=2)
    q = head(torch.randn(1, 4, dtype=F64))
    with torch.no_grad():
        z = q.rsample((400_000,), generator=torch.Generator().manual_seed(0))[:, 0, 0]
        edges = torch.quantile(z[:20_000], torch.linspace(0.05, 0.95, 10, dtype=F64))
        fine = torch.linspace(float(edges[0]), float(edges[-1]), 9001, dtype=F64)
        density = q.log_prob(fine[:, None, None])[:, 0].exp()
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (fine >= lo) & (fine <= hi)
        mass = torch.trapezoid(density[inside], fine[inside])
        frac = ((z >= lo) & (z < hi)).double().mean()
        err = math.sqrt(frac * (1 - frac) / z.numel())
        assert abs(frac - mass) < 4 * err + 2e-4, (lo, hi, frac, mass)


def test_iaf_mean_is_the_monte_carlo_mean_with_noise_shared_by_all_sentences():
    head = iaf_head(latent=3, features=4)
    h = torch.randn(1, 4, dtype=F64)
    q = head(h.expand(5, 4))  # five identical sentences: one mean, no spread (AU = 0)
    torch.testing.assert_close(q.mean, q.mean[:1].expand(5, 3))
    single = head(h)
    many = single.rsample((200_000,), generator=torch.Generator().manual_seed(0))[:, 0]
    torch.testing.assert_close(single.mean[0], many.mean(0), atol=0.08, rtol=0)
    assert q.entropy() is None and q.noise_size == 3 and len(q) == 5
