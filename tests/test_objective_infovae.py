"""InfoVAE / MMD-VAE (Zhao et al. 2019): the kernels, the unbiased MMD^2 against its closed form
for shifted Gaussians under the RBF kernel, the prior draws, and the objective's weights."""

import math

import pytest
import torch
from objective_inputs import (
    batch,
    configured,
    objective_cfg,
    rows,
    run,
    step_input,
    tiny_model,
    two_processes,
)

from vae_text.core.errors import ConfigError
from vae_text.model.latent import DiagonalGaussian, StandardNormal
from vae_text.model.textvae import Output
from vae_text.objectives import OBJECTIVES
from vae_text.objectives.infovae import InfoVae, kernel, mmd, prior_draws


def test_kernel_hand_values():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 1.0]])  # n 3, d 2
    y = torch.tensor([[1.0, 1.0], [0.0, 0.0], [2.0, 2.0], [-1.0, 0.0]])  # m 4
    # C = 2 d scale^2 = 4 at scale 1; |x_0 - y_0|^2 = 2
    assert kernel(x, y, "rbf").shape == (3, 4)
    assert kernel(x, y, "rbf")[0, 0].item() == pytest.approx(math.exp(-2 / 4))
    assert kernel(x, y, "imq")[0, 0].item() == pytest.approx(4 / (4 + 2))
    assert kernel(x, y, "imq", scale=0.5)[2, 1].item() == pytest.approx(1 / (1 + 10))  # C = 1
    assert torch.allclose(kernel(x, x, "rbf").diagonal(), torch.ones(3))
    with pytest.raises(ValueError, match="unknown kernel"):
        kernel(x, y, "laplace")


def rbf_mmd2_shifted_gaussians(shift: torch.Tensor, s: float, c: float) -> float:
    """MMD^2 between N(0, s^2 I) and N(shift, s^2 I) under exp(-|u|^2 / C): E exp(-|u|^2 / C) for
    u ~ N(m, v I) in R^d is (1 + 2v / C)^(-d/2) exp(-|m|^2 / (C + 2v)), here with v = 2 s^2."""
    d, v = shift.numel(), 2 * s**2
    base = (1 + 2 * v / c) ** (-d / 2)
    return 2 * base * (1 - math.exp(-shift.pow(2).sum().item() / (c + 2 * v)))


def test_mmd_of_shifted_gaussians_matches_the_rbf_closed_form():
    g = torch.Generator().manual_seed(0)
    d, s, n = 3, 0.7, 300
    shift = torch.tensor([0.8, -0.3, 0.5], dtype=torch.float64)
    estimates = torch.stack([
        mmd(s * torch.randn(n, d, generator=g, dtype=torch.float64),
            shift + s * torch.randn(n + 7, d, generator=g, dtype=torch.float64), "rbf")  # m != n
        for _ in range(200)])
    expected = rbf_mmd2_shifted_gaussians(shift, s, c=2 * d * 1.0**2)
    se = (estimates.std() / math.sqrt(len(estimates))).item()
    assert se < 0.01 * expected  # a tight check: the estimator is unbiased
    assert abs(estimates.mean().item() - expected) < 4 * se


@pytest.mark.parametrize("name", ["rbf", "imq"])
def test_mmd_of_one_distribution_is_zero_in_expectation(name):
    g = torch.Generator().manual_seed(1)
    estimates = torch.stack([mmd(torch.randn(40, 5, generator=g, dtype=torch.float64),
                                 torch.randn(30, 5, generator=g, dtype=torch.float64), name)
                             for _ in range(400)])
    se = estimates.std() / math.sqrt(len(estimates))
    assert estimates.mean().abs() < 4 * se  # unbiased: the diagonals are left out
    shifted = mmd(torch.randn(40, 5, generator=g, dtype=torch.float64),
                  1.0 + torch.randn(30, 5, generator=g, dtype=torch.float64), name)
    assert shifted > estimates.mean() + 10 * estimates.std()
    with pytest.raises(ValueError, match="two samples"):
        mmd(torch.zeros(1, 5), torch.zeros(4, 5))


@pytest.mark.parametrize("prior", ["standard_normal", "mog"])
def test_prior_draws_depend_on_the_step_alone(prior):
    model = tiny_model(prior=prior)
    like = torch.zeros(1, 4)
    first = prior_draws(model.prior, 6, step=12, like=like)
    torch.randn(100)  # the global generator's state plays no part
    assert torch.equal(first, prior_draws(model.prior, 6, step=12, like=like))
    assert not torch.equal(first, prior_draws(model.prior, 6, step=13, like=like))
    assert first.shape == (6, 4)


def infovae_result(alpha, lambda_, beta=1.0, kernel_name="imq"):
    model = tiny_model()
    tokens, lengths = batch()
    out = run(model, tokens, lengths)
    objective = InfoVae(objective_cfg(), alpha=alpha, lambda_=lambda_, kernel=kernel_name)
    return out, model, objective(step_input(out, model.prior, beta=beta, step=7))


def test_the_weights_reduce_to_the_elbo_and_to_reconstruction():
    out, _, elbo = infovae_result(alpha=0.0, lambda_=1.0, beta=0.6)  # MMD weight 0
    assert elbo.loss.item() == pytest.approx((out.rec + 0.6 * out.kl.sum(-1)).mean().item(), rel=1e-6)
    out, _, rec_only = infovae_result(alpha=1.0, lambda_=0.0)  # KL and MMD weights 0
    assert rec_only.loss.item() == pytest.approx(out.rec.mean().item(), rel=1e-6)


def test_loss_is_rec_weighted_kl_and_weighted_mmd_of_the_codes_against_prior_draws():
    alpha, lambda_, beta = 0.25, 40.0, 0.5
    out, model, result = infovae_result(alpha, lambda_, beta, kernel_name="rbf")
    divergence = mmd(out.z, prior_draws(model.prior, 5, step=7, like=out.z), "rbf")
    expected = (out.rec.mean() + (1 - alpha) * beta * out.kl.sum(-1).mean()
                + (alpha + lambda_ - 1) * divergence)
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert result.stats["mmd"].item() == pytest.approx(divergence.item(), rel=1e-6)
    assert result.stats["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(result.stats) == {"loss", "rec", "kl", "mmd"}
    # the MMD's gradient reaches the encoder through the codes
    model.zero_grad()
    result.loss.backward()
    assert model.head.linear.weight.grad.abs().sum() > 0


def test_two_processes_add_up_to_one_and_a_lone_sentence_adds_no_mmd():
    model = tiny_model()
    tokens, lengths = batch()
    out = run(model, tokens, lengths)
    objective = InfoVae(objective_cfg(), alpha=0.5, lambda_=10.0)
    whole = objective(step_input(out, model.prior))
    shares = two_processes(objective, [rows(out, slice(0, 2)), rows(out, slice(2, 5))],
                           model.prior, batch_size=5)
    # the whole batch's MMD^2, whatever the split: every share gathers all codes
    for share in shares:
        for key in ("rec", "kl", "mmd", "loss"):
            assert share.stats[key].item() == pytest.approx(whole.stats[key].item(), rel=1e-6)
    assert sum(s.loss for s in shares).item() == pytest.approx(whole.loss.item(), rel=1e-6)
    lone = objective(step_input(rows(out, slice(0, 1)), model.prior, batch_size=1))
    assert lone.stats["mmd"].item() == 0.0  # one code: no within-sample term, no estimate


def test_options_are_checked_with_one_line_config_errors():
    assert OBJECTIVES["infovae"] is InfoVae
    for bad in (dict(alpha=1.5), dict(alpha=0.0, lambda_=0.5), dict(kernel="laplace"),
                dict(scale=0.0), dict(lambda_="big")):
        with pytest.raises(ConfigError, match=r"objective\.args\.") as err:
            configured(InfoVae, **bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"objective\.free_bits=.*objective=infovae"):
        InfoVae(objective_cfg(free_bits=1.0))


def test_the_shares_gradients_add_up_to_the_whole_batchs():
    """With codes gathered without gradient, each share's term still carries the gradient of
    every pair its codes are in: summed over the shares, the whole batch's gradient."""
    torch.manual_seed(3)
    B, Z = 7, 4
    z = torch.randn(B, Z, requires_grad=True)
    rec, kl = torch.rand(B) * 5, torch.rand(B, Z)
    prior = StandardNormal(Z)
    q = DiagonalGaussian(torch.zeros(B, Z), torch.zeros(B, Z))
    objective = InfoVae(objective_cfg(), alpha=0.5, lambda_=10.0, kernel="rbf")

    def output(index):
        return Output(rec[index], kl[index], q.index(index), z[index])

    (whole,) = torch.autograd.grad(objective(step_input(output(slice(None)), prior)).loss, z)
    # independently: the MMD^2 of all codes with every pair's gradient (no gathering at all)
    reference = (0.5 + 10.0 - 1) * mmd(z, prior_draws(prior, B, 0, z), "rbf") + kl.sum() / B * 0.5
    (expected,) = torch.autograd.grad(reference, z)
    torch.testing.assert_close(whole, expected, rtol=1e-5, atol=1e-6)
    shares = two_processes(objective, [output(slice(0, 3)), output(slice(3, B))], prior,
                           batch_size=B)
    (split,) = torch.autograd.grad(sum(s.loss for s in shares), z)
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-6)
    assert whole.abs().sum() > 0
