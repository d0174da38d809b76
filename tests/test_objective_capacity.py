"""Controlled capacity (Burgess et al. 2018): the linear capacity, the penalty per sentence, its
gradient, and the capacity logged."""

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
from vae_text.objectives.capacity import Capacity, capacity, capacity_penalty


def test_capacity_rises_linearly_then_stays():
    assert capacity(0, 8.0, 10_000) == 0.0
    assert capacity(2_500, 8.0, 10_000) == pytest.approx(2.0)
    assert capacity(10_000, 8.0, 10_000) == 8.0
    assert capacity(10**7, 8.0, 10_000) == 8.0
    with pytest.raises(ValueError):
        capacity(1, 8.0, 0)


def test_penalty_hand_values():
    kl = torch.tensor([1.0, 5.0, 3.0])
    assert torch.equal(capacity_penalty(kl, 3.0, 10.0), torch.tensor([20.0, 20.0, 0.0]))


def test_loss_stats_and_the_gradient_pull_each_sentence_towards_c():
    objective = Capacity(objective_cfg(), gamma=10.0, c_max=8.0, steps=400)
    rec = torch.tensor([30.0, 40.0, 50.0, 20.0])
    kl = torch.tensor([[0.5, 0.5], [2.0, 2.0], [3.0, 3.5], [1.0, 1.5]], requires_grad=True)  # N 4, Z 2
    result = objective(step_input(Output(rec, kl), step=150, beta=0.5))  # C = 3
    # per sentence KL 1, 4, 6.5, 2.5 -> |KL - C| 2, 1, 3.5, 0.5: mean 1.75
    assert result.loss.item() == pytest.approx(35.0 + 0.5 * 10.0 * 1.75)
    assert {k: v.item() for k, v in result.stats.items()} == pytest.approx(
        {"loss": 43.75, "rec": 35.0, "kl": 3.5, "capacity": 3.0})
    result.loss.backward()
    sign = torch.tensor([-1.0, 1.0, 1.0, -1.0])[:, None]  # below C: pushed up; above: down
    assert torch.allclose(kl.grad, (0.5 * 10.0 * sign / 4).expand_as(kl))


def test_two_processes_add_up_to_one():
    model = tiny_model()
    tokens, lengths = batch()
    out = run(model, tokens, lengths)
    objective = Capacity(objective_cfg(), gamma=3.0, c_max=1.0, steps=10)
    whole = objective(step_input(out, model.prior, step=4))
    shares = two_processes(objective, [rows(out, slice(0, 3)), rows(out, slice(3, 5))],
                           model.prior, batch_size=5, step=4)
    assert sum(s.loss for s in shares).item() == pytest.approx(whole.loss.item(), rel=1e-6)
    for key, value in whole.stats.items():
        assert shares[1].stats[key].item() == pytest.approx(value.item(), rel=1e-6), key
    empty = objective(step_input(rows(out, slice(0, 1)), model.prior, batch_size=5, share=0.0))
    assert empty.loss.item() == 0.0


def test_options_are_checked_with_one_line_config_errors():
    assert OBJECTIVES["capacity"] is Capacity
    for bad in (dict(gamma=-1.0), dict(c_max=-2.0), dict(steps=0), dict(steps=2.5), dict(gamma="x")):
        with pytest.raises(ConfigError, match=r"objective\.args\.") as err:
            configured(Capacity, **bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"objective\.free_bits=.*objective=capacity"):
        Capacity(objective_cfg(free_bits=3.0))
