"""The IWAE objective (Burda et al. 2016) and its DReG gradient (Tucker et al. 2019), checked
against a conjugate Gaussian whose log p(x) and ELBO are known in closed form, by Monte Carlo."""

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
from vae_text.model.latent import LOG_2PI
from vae_text.objectives import OBJECTIVES, Elbo
from vae_text.objectives.iwae import Iwae, dreg_surrogate, iw_bound, log_weights

X = 1.3  # the observation of the toy: p(z) = N(0, 1), p(x|z) = N(x; z, 1), so p(x) = N(x; 0, 2)
MU, SIGMA = 0.2, 0.6  # q(z|x) = N(MU, SIGMA^2), not the posterior N(x / 2, 1 / 2)


def normal_log_pdf(x, mean, std):
    return -0.5 * (LOG_2PI + 2 * torch.log(torch.as_tensor(std)) + ((x - mean) / std) ** 2)


def toy_log_w(z, mu, sigma, beta=1.0):
    """log w of the conjugate toy for draws z of q = N(mu, sigma^2)."""
    rec = -normal_log_pdf(X, z, 1.0)
    return log_weights(rec, normal_log_pdf(z, 0.0, 1.0), normal_log_pdf(z, mu, sigma), beta)


def test_iw_bound_hand_values():
    log_w = torch.tensor([[0.0, math.log(3.0)], [2.0, 2.0]])
    assert torch.allclose(iw_bound(log_w), torch.tensor([math.log(2.0), 2.0]))
    # a single draw is its own log weight: L_1 is the (one-sample) ELBO
    assert iw_bound(torch.tensor([[-4.5]])).item() == -4.5


def test_iw_bound_rises_with_k_to_log_px_on_the_conjugate_gaussian():
    log_px = normal_log_pdf(torch.tensor(X, dtype=torch.float64), 0.0, math.sqrt(2.0)).item()
    # E_q[log p(x|z) + log p(z) - log q(z)] in closed form
    elbo = (-LOG_2PI - 0.5 * ((X - MU) ** 2 + SIGMA**2) - 0.5 * (MU**2 + SIGMA**2)
            + 0.5 * math.log(2 * math.pi * math.e * SIGMA**2))
    g = torch.Generator().manual_seed(0)
    mean, se = {}, {}
    for k in (1, 5, 50, 2000):
        reps = 1_000_000 // k
        z = MU + SIGMA * torch.randn(reps, k, generator=g, dtype=torch.float64)
        bound = iw_bound(toy_log_w(z, MU, SIGMA))
        mean[k], se[k] = bound.mean().item(), bound.std().item() / math.sqrt(reps)
    assert abs(mean[1] - elbo) < 4 * se[1]
    for small, large in ((1, 5), (5, 50)):  # gaps of 0.15 and 0.07 nats, at ~1e-3 standard errors
        assert mean[large] - mean[small] > 4 * (se[small] + se[large])
    assert log_px - mean[50] > 4 * se[50]  # still below log p(x) ...
    assert abs(log_px - mean[2000]) < 4 * se[2000] + 1e-3  # ... which large K reaches
    # q = the exact posterior: every weight is p(x), so L_K = log p(x) for any draws and K
    z = X / 2 + math.sqrt(0.5) * torch.randn(3, 7, generator=g, dtype=torch.float64)
    exact = iw_bound(toy_log_w(z, X / 2, math.sqrt(0.5)))
    assert torch.allclose(exact, torch.full_like(exact, log_px), atol=1e-12)


def encoder_gradients(k: int, reps: int, beta: float, estimator: str, seed: int = 0):
    """Per-replicate gradients of the bound wrt q's (mu, log sigma): (reps, 2)."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.full((reps, 1), MU, dtype=torch.float64, requires_grad=True)
    log_sigma = torch.full((reps, 1), math.log(SIGMA), dtype=torch.float64, requires_grad=True)
    eps = torch.randn(reps, k, generator=g, dtype=torch.float64)
    z_rows = (mu + log_sigma.exp() * eps).reshape(reps * k, 1)  # sentence-major rows
    z = z_rows.reshape(reps, k)
    if estimator == "iwae":
        bound = iw_bound(toy_log_w(z, mu, log_sigma.exp(), beta))
    else:  # q's parameters held fixed inside log q
        log_w = toy_log_w(z, mu.detach(), log_sigma.detach().exp(), beta)
        if estimator == "dreg":
            bound = dreg_surrogate(log_w, z_rows, beta)
        else:  # "path": the score term dropped with no correction (biased for K > 1)
            w = torch.softmax(log_w.detach(), -1)
            bound = (w * log_w).sum(-1)
    bound.sum().backward()
    return torch.cat([mu.grad, log_sigma.grad], 1)


@pytest.mark.parametrize("beta", [1.0, 0.4])
def test_dreg_is_unbiased_for_the_iwae_gradient_with_lower_variance(beta):
    k, reps = 8, 200_000
    plain = encoder_gradients(k, reps, beta, "iwae")
    dreg = encoder_gradients(k, reps, beta, "dreg")  # the same draws (the same seed)
    path = encoder_gradients(k, reps, beta, "path")
    diff = dreg - plain
    assert (diff.mean(0).abs() < 4 * diff.std(0) / math.sqrt(reps)).all(), diff.mean(0)
    assert (dreg.var(0) < 0.5 * plain.var(0)).all()
    # the check can fail: dropping the score term without DReG's reweighting is biased
    bias = path - plain
    assert (bias.mean(0).abs() > 10 * bias.std(0) / math.sqrt(reps)).any()


def test_dreg_surrogate_value_is_the_bound():
    log_w = torch.tensor([[-3.0, -1.0, -2.5], [0.5, 0.0, -7.0]])
    z = torch.randn(6, 2)
    assert torch.allclose(dreg_surrogate(log_w, z), iw_bound(log_w))


def elbo_with_mc_kl(out, beta):
    """The beta-ELBO loss with the single-sample KL log q(z|x) - log p(z) at the decoder's z."""
    return (out.rec + beta * out.kl.sum(-1)).mean()


@pytest.mark.parametrize("prior", ["mog", "standard_normal"])
def test_iwae_at_k_1_is_the_elbo_loss_and_gradient(prior):
    beta = 0.7
    model = tiny_model(prior=prior, prior_args={"components": 3} if prior == "mog" else {})
    tokens, lengths = batch()
    objective = Iwae(objective_cfg(), samples=1)
    out = run(model, tokens, lengths)
    loss = objective(step_input(out, model.prior, beta=beta)).loss
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    out = run(model, tokens, lengths)
    if prior == "mog":  # no closed form: the model's KL is the single-sample estimate
        reference = elbo_with_mc_kl(out, beta)
    else:  # a closed-form KL: compare with the single-sample log-ratio explicitly
        log_ratio = out.posterior.log_prob(out.z) - model.prior.log_prob(out.z)
        reference = (out.rec + beta * log_ratio).mean()
    expected = torch.autograd.grad(reference, list(model.parameters()), allow_unused=True)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    for a, b in zip(grads, expected):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dreg", [False, True])
@pytest.mark.parametrize("posterior", ["gaussian", "iaf", "vmf"])
def test_k_identical_draws_give_the_one_draw_bound_so_rows_are_sentence_major(posterior, dreg):
    k = 3
    prior = "uniform_sphere" if posterior == "vmf" else "standard_normal"
    model = tiny_model(posterior=posterior, prior=prior).eval()
    tokens, lengths = batch()
    eps = torch.randn(5, model.noise_size, generator=torch.Generator().manual_seed(3))
    one = Iwae(objective_cfg(), samples=1, dreg=dreg)(
        step_input(run(model, tokens, lengths, eps=eps), model.prior))
    repeated = run(model, tokens, lengths, samples=k, eps=eps.repeat_interleave(k, 0))
    many = Iwae(objective_cfg(), samples=k, dreg=dreg)(step_input(repeated, model.prior, samples=k))
    for key in ("loss", "rec", "kl", "iw_bound"):
        assert many.stats[key].item() == pytest.approx(one.stats[key].item(), rel=1e-5), key
    assert many.loss.item() == pytest.approx(one.loss.item(), rel=1e-5)


def test_iwae_bound_is_tighter_than_the_elbo_on_a_real_model_and_logs_it():
    model = tiny_model().eval()
    tokens, lengths = batch()
    k = 6
    with torch.no_grad():
        out = run(model, tokens, lengths, samples=k)
        stats = Iwae(objective_cfg(), samples=k)(step_input(out, model.prior, samples=k)).stats
    log_ratio = out.posterior.log_prob(out.z) - model.prior.log_prob(out.z)
    neg_elbo = (out.rec + log_ratio).mean()  # the single-draw ELBO's mean over the same draws
    # Jensen on every sentence's draws: log mean w >= mean log w, so the bound is above
    assert -stats["iw_bound"].item() < neg_elbo.item()
    assert stats["loss"].item() == pytest.approx(-stats["iw_bound"].item())  # beta = 1
    assert set(stats) == {"loss", "rec", "kl", "iw_bound"}


def test_two_processes_add_up_to_one():
    k = 2
    model = tiny_model()
    tokens, lengths = batch()
    out = run(model, tokens, lengths, samples=k)
    objective = Iwae(objective_cfg(), samples=k)
    whole = objective(step_input(out, model.prior, samples=k, beta=0.5))
    shares = two_processes(objective, [rows(out, slice(0, 4)), rows(out, slice(4, 10))],
                           model.prior, batch_size=5, samples=k, beta=0.5)
    assert sum(s.loss for s in shares).item() == pytest.approx(whole.loss.item(), rel=1e-6)
    for key, value in whole.stats.items():
        for s in shares:
            assert s.stats[key].item() == pytest.approx(value.item(), rel=1e-6), key


def test_options_and_refusals_are_one_line_config_errors():
    assert OBJECTIVES["iwae"] is Iwae
    for bad in (dict(samples=0), dict(samples=2.5), dict(samples=True), dict(dreg="yes")):
        with pytest.raises(ConfigError, match=r"objective\.args\.") as err:
            configured(Iwae, **bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"objective\.free_bits=4.0 .*objective=iwae"):
        Iwae(objective_cfg(free_bits=4.0))
    assert Iwae(objective_cfg(), samples=7).samples == 7
    linear = Iwae(objective_cfg("linear", kl_weight=0.5))  # beta on the log-ratio: annealed
    assert linear.beta(0) == 0.0 and linear.beta(10**6) == 0.5


@pytest.mark.parametrize("posterior", ["gaussian", "iaf", "vmf"])
def test_a_detached_posterior_has_the_same_density_as_a_function_of_z_alone(posterior):
    prior = "uniform_sphere" if posterior == "vmf" else "standard_normal"
    model = tiny_model(posterior=posterior, prior=prior)
    tokens, lengths = batch()
    out = run(model, tokens, lengths)
    z = out.z.detach().requires_grad_(True)
    fixed = out.posterior.detached().log_prob(z)  # IAF: by inverting the flow at z
    assert torch.allclose(fixed, out.posterior.log_prob(out.z), atol=1e-4)  # IAF: forward pass
    fixed.sum().backward()
    assert z.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.encoder_parameters())


def test_dreg_changes_only_the_encoder_gradient_of_a_real_model():
    k = 3
    model = tiny_model()
    tokens, lengths = batch()
    eps = torch.randn(5 * k, model.noise_size, generator=torch.Generator().manual_seed(5))
    grads = {}
    for dreg in (False, True):
        out = run(model, tokens, lengths, samples=k, eps=eps)
        loss = Iwae(objective_cfg(), samples=k, dreg=dreg)(step_input(out, model.prior, samples=k)).loss
        model.zero_grad()
        loss.backward()
        grads[dreg] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for name in grads[False]:
        same = torch.allclose(grads[False][name], grads[True][name], rtol=1e-5, atol=1e-7)
        assert same == name.startswith("decoder."), name  # the encoder's and head's differ


@pytest.mark.parametrize("posterior,prior", [("gaussian", "mog"), ("iaf", "standard_normal")])
def test_iwae_at_k_1_equals_the_elbo_objective_where_its_kl_is_the_single_draw_estimate(
        posterior, prior):
    model = tiny_model(posterior=posterior, prior=prior)
    tokens, lengths = batch()
    cfg = objective_cfg("linear", kl_weight=0.9)
    results, grads = {}, {}
    for objective in (Elbo(cfg), Iwae(cfg, samples=1)):
        beta = objective.beta(4000)  # the same schedule: 0.36
        result = objective(step_input(run(model, tokens, lengths), model.prior, beta=beta))
        model.zero_grad()
        result.loss.backward()
        results[objective.name] = result
        grads[objective.name] = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    assert results["iwae"].loss.item() == pytest.approx(results["elbo"].loss.item(), rel=1e-6)
    for key in ("loss", "rec", "kl"):
        assert results["iwae"].stats[key].item() == pytest.approx(
            results["elbo"].stats[key].item(), rel=1e-6), key
    assert len(grads["iwae"]) == len(grads["elbo"])
    for a, b in zip(grads["iwae"], grads["elbo"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
