"""The minimum-desired-rate objective (Pelsmaeker & Aziz 2020): its Lagrangian, the projected
ascent on lambda, lambda's checkpoint state, and the constrained optimum it reaches on a toy."""

import pickle

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
from vae_text.model.textvae import Output
from vae_text.objectives import OBJECTIVES
from vae_text.objectives.mdr import MinimumDesiredRate, dual_step, lagrangian


def synthetic(rec, kl):
    """An Output of per-sentence rec (N,) and KL (N, Z)."""
    return Output(rec, kl)


def test_lagrangian_and_dual_step_hand_values():
    rec, kl = torch.tensor([10.0, 20.0]), torch.tensor([3.0, 5.0])
    # rec + beta KL + lambda (r - KL) at beta = 1, lambda = 0.5, r = 8
    assert torch.equal(lagrangian(rec, kl, 1.0, 0.5, 8.0), torch.tensor([15.5, 26.5]))
    lam = torch.tensor(0.5, dtype=torch.float64)
    step = lambda kl: dual_step(lam, 8.0, torch.tensor(kl, dtype=torch.float64), 0.1).item()  # noqa: E731
    assert step(3.0) == pytest.approx(1.0)  # violated by 5: lambda grows
    assert step(20.0) == 0.0  # satisfied by 12: projected back onto 0
    assert step(8.0) == 0.5  # on the boundary: unchanged


def test_loss_statistics_and_the_kl_gradient_weight():
    objective = MinimumDesiredRate(objective_cfg(), rate=6.0, lambda_lr=0.1, lambda_init=1.5)
    rec = torch.tensor([30.0, 40.0, 50.0])
    kl = torch.tensor([[1.0, 0.5], [2.0, 0.0], [4.0, 1.5]], requires_grad=True)  # N 3, Z 2
    result = objective(step_input(synthetic(rec, kl), beta=0.8))
    # batch means: rec 40, KL 3; loss 40 + 0.8 * 3 + 1.5 * (6 - 3)
    assert result.loss.item() == pytest.approx(46.9)
    assert {k: v.item() for k, v in result.stats.items()} == pytest.approx(
        {"loss": 46.9, "rec": 40.0, "kl": 3.0, "lambda": 1.5})
    result.loss.backward()
    # the KL's net weight is beta - lambda, per sentence of the batch mean
    assert torch.allclose(kl.grad, torch.full_like(kl, (0.8 - 1.5) / 3))
    objective.after_step(result.stats)
    assert objective.lam.item() == pytest.approx(1.5 + 0.1 * (6.0 - 3.0))


def test_lambda_is_checkpointed_exactly():
    objective = MinimumDesiredRate(objective_cfg(), lambda_lr=0.037)
    for kl in (0.3, 1.7, 2.9):  # lambda a float with no short decimal form
        objective.after_step({"kl": torch.tensor(kl, dtype=torch.float64)})
    state = pickle.loads(pickle.dumps(objective.state_dict()))  # what torch.save does with it
    restored = MinimumDesiredRate(objective_cfg(), lambda_lr=0.037)
    restored.load_state_dict(state)
    assert restored.lam.item() == objective.lam.item() > 0  # bit for bit
    assert set(state) == {"lam"} and state["lam"].device.type == "cpu"
    old = MinimumDesiredRate(objective_cfg(), lambda_lr=0.037)
    old.load_state_dict({"lam": objective.lam.item()})  # an older checkpoint's Python float
    assert old.lam.dtype == torch.float64 and old.lam.item() == objective.lam.item()


def test_primal_dual_descent_reaches_the_constrained_optimum():
    """A toy whose reconstruction is best at KL = 1 nat: rec = 20 + (KL - 1)^2 / 2. The ELBO's
    optimum is KL = 0; under KL >= r = 4 it is KL = 4 with lambda = beta + d rec / d KL = 4 (KKT)."""
    rate, beta = 4.0, 1.0
    objective = MinimumDesiredRate(objective_cfg(), rate=rate, lambda_lr=0.05)
    kl = torch.tensor([0.0], requires_grad=True)  # (1,) the rate, the model's only parameter
    opt = torch.optim.SGD([kl], lr=0.1)
    for _ in range(1500):
        rec = 20.0 + 0.5 * (kl - 1) ** 2
        result = objective(step_input(synthetic(rec, kl[:, None]), beta=beta))
        opt.zero_grad()
        result.loss.backward()
        opt.step()
        objective.after_step(result.stats)
    assert kl.item() == pytest.approx(rate, abs=1e-3)
    assert objective.lam.item() == pytest.approx(beta + (rate - 1), abs=1e-3)
    # without the constraint (r = 0) the same descent goes to the ELBO's optimum, KL = 0
    free = MinimumDesiredRate(objective_cfg(), rate=0.0, lambda_lr=0.05)
    kl = torch.tensor([2.0], requires_grad=True)
    opt = torch.optim.SGD([kl], lr=0.1)
    for _ in range(500):
        result = free(step_input(synthetic(20.0 + 0.5 * (kl - 1) ** 2, kl[:, None]), beta=beta))
        opt.zero_grad()
        result.loss.backward()
        opt.step()
        free.after_step(result.stats)
    assert abs(kl.item()) < 1e-3 and free.lam.item() == 0.0


def test_two_processes_add_up_to_one_and_an_empty_share_adds_nothing():
    model = tiny_model()
    tokens, lengths = batch()
    out = run(model, tokens, lengths)
    objective = MinimumDesiredRate(objective_cfg(), rate=30.0, lambda_init=0.4)
    whole = objective(step_input(out, model.prior, beta=0.9))
    shares = two_processes(objective, [rows(out, slice(0, 2)), rows(out, slice(2, 5))],
                           model.prior, batch_size=5, beta=0.9)
    assert sum(s.loss for s in shares).item() == pytest.approx(whole.loss.item(), rel=1e-6)
    for key, value in whole.stats.items():
        assert shares[0].stats[key].item() == pytest.approx(value.item(), rel=1e-6), key
    empty = objective(step_input(rows(out, slice(0, 1)), model.prior, batch_size=5, share=0.0))
    assert empty.loss.item() == 0.0


def test_options_are_checked_with_one_line_config_errors():
    assert OBJECTIVES["mdr"] is MinimumDesiredRate
    for bad in (dict(rate=-1.0), dict(lambda_lr=-0.1), dict(lambda_init=-2.0), dict(rate="8")):
        with pytest.raises(ConfigError, match=r"objective\.args\.") as err:
            configured(MinimumDesiredRate, **bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"objective\.free_bits=.*objective=mdr"):
        MinimumDesiredRate(objective_cfg(free_bits=2.0))
    assert MinimumDesiredRate(objective_cfg()).beta(123) == 1.0  # constant: the paper's ELBO
