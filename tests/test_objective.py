import math

import pytest
import torch

from vae_text.model.nll import sentence_nll
from vae_text.objectives import (
    constant,
    cyclical,
    elbo_loss,
    free_bits,
    kl_weight,
    linear,
    logistic,
)


def test_schedule_values():
    assert [constant(s) for s in (0, 10, 10**6)] == [1.0, 1.0, 1.0]
    assert linear(0, warmup_steps=100) == 0.0
    assert linear(25, warmup_steps=100) == 0.25
    assert linear(100, warmup_steps=100) == 1.0
    assert linear(500, warmup_steps=100) == 1.0
    assert linear(0, warmup_steps=100, start=0.1) == pytest.approx(0.1)
    assert linear(50, warmup_steps=100, start=0.1) == pytest.approx(0.55)
    assert logistic(2500, k=0.0025, x0=2500) == 0.5
    assert logistic(0, k=0.0025, x0=2500) == pytest.approx(1 / (1 + math.exp(6.25)))
    assert logistic(10**7, k=1.0, x0=0) == 1.0 and logistic(-10**7, k=1.0, x0=0) == 0.0
    assert kl_weight(50, 0.5, "linear", warmup_steps=100) == 0.25


@pytest.mark.parametrize("bad", [dict(warmup_steps=0), dict(warmup_steps=10, start=1.5)])
def test_linear_rejects_bad_parameters(bad):
    with pytest.raises(ValueError):
        linear(0, **bad)


def test_sentence_nll_sums_token_nll_per_sentence():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]))
    targets = torch.tensor([0, 1, 2])
    rows = torch.tensor([0, 0, 2])  # sentence 1 of 4 has no tokens here, sentence 3 neither
    nll = sentence_nll(logits, targets, rows, batch_size=4)
    expected = torch.tensor([-math.log(0.5) - math.log(0.8), 0.0, -math.log(0.6), 0.0])
    torch.testing.assert_close(nll, expected)


def test_sentence_nll_values_and_gradients_are_cross_entropys():
    # N 11 tokens, V 7 classes, B 4 sentences; sentences weighted unequally so that the gradient
    # reaching each token differs (as the KL-free parts of a loss do not)
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(11, 7, generator=g, dtype=torch.float64)).requires_grad_()
    targets = torch.randint(7, (11,), generator=g)
    rows = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3])
    weights = torch.tensor([0.5, -1.0, 2.0, 3.0], dtype=torch.float64)
    nll = sentence_nll(logits, targets, rows, batch_size=4)
    (nll * weights).sum().backward()
    ref = logits.detach().clone().requires_grad_()
    tokens = torch.nn.functional.cross_entropy(ref, targets, reduction="none")
    expected = torch.stack([tokens[rows == b].sum() for b in range(4)])
    (expected * weights).sum().backward()
    assert torch.equal(nll.detach(), expected.detach())  # the same values, bit for bit
    torch.testing.assert_close(logits.grad, ref.grad)
    # by hand: d/dlogits of w * -log softmax[target] = w * (softmax - onehot)
    hand = (torch.softmax(logits.detach(), -1) - torch.nn.functional.one_hot(targets, 7)) * weights[rows, None]
    torch.testing.assert_close(logits.grad, hand)
    with torch.no_grad():  # evaluation: no gradient buffer, the same values
        assert torch.equal(sentence_nll(logits, targets, rows, 4), expected.detach())


def test_sentence_nll_backward_runs_once():
    logits = torch.randn(5, 3, requires_grad=True)
    nll = sentence_nll(logits, torch.tensor([0, 2, 1, 1, 0]), torch.tensor([0, 0, 1, 1, 1]), 2)
    nll.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backpropagated twice"):
        nll.sum().backward()


def test_elbo_loss_averages_both_terms_over_sentences():
    rec = torch.tensor([10.0, 20.0, 30.0])
    kl = torch.tensor([[0.5, 0.5], [1.5, 0.5], [2.0, 4.0]])  # (B, Z): 1, 2 and 6 nats
    assert elbo_loss(rec, kl, 0.5).item() == pytest.approx(20.0 + 0.5 * 3.0)


def test_cyclical_schedule_boundaries():
    f = lambda step, **kw: cyclical(step, cycle_steps=100, **kw)  # noqa: E731
    assert [f(s) for s in (0, 25, 49, 50, 99, 100, 125, 150)] == [
        0.0, 0.5, 0.98, 1.0, 1.0, 0.0, 0.5, 1.0]  # rises over the first half, resets each cycle
    assert f(0, start=0.1) == pytest.approx(0.1) and f(25, start=0.1) == pytest.approx(0.55)
    # a zero phase of 20 % then a rise over 40 %
    assert [f(s, ratio=0.4, zero_ratio=0.2) for s in (0, 19, 20, 40, 59, 60, 99, 119, 140)] == \
        pytest.approx([0.0, 0.0, 0.0, 0.5, 0.975, 1.0, 1.0, 0.0, 0.5])
    assert [f(s, cycles=2) for s in (150, 199, 200, 210, 10_000)] == [1.0, 1.0, 1.0, 1.0, 1.0]
    assert f(210, cycles=3) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        cyclical(0, cycle_steps=10, ratio=0.8, zero_ratio=0.5)


def test_free_bits_per_dimension_gives_no_gradient_below_the_threshold():
    # batch 3, latent 4; budget 2 nats -> 0.5 per dimension
    kl = torch.tensor([[0.1, 2.0, 0.4, 0.0],
                       [0.2, 1.0, 0.8, 0.1],
                       [0.3, 3.0, 0.9, 0.2]], requires_grad=True)
    term = free_bits(kl, 2.0, "dim")
    # batch means per dimension: 0.2, 2.0, 0.7, 0.1 -> max(0.5, .) = 0.5, 2.0, 0.7, 0.5
    assert term.item() == pytest.approx(3.7)
    term.backward()
    assert kl.grad[:, 0].abs().sum() == 0 and kl.grad[:, 3].abs().sum() == 0
    torch.testing.assert_close(kl.grad[:, 1], torch.full((3,), 1 / 3))
    torch.testing.assert_close(kl.grad[:, 2], torch.full((3,), 1 / 3))


def test_free_bits_per_sentence_and_off():
    kl = torch.tensor([[0.5, 0.5], [3.0, 1.0]], requires_grad=True)  # sentences: 1 and 4 nats
    term = free_bits(kl, 2.0, "sentence")  # max(2, 1) and max(2, 4): mean 3
    assert term.item() == pytest.approx(3.0)
    term.backward()
    assert kl.grad[0].abs().sum() == 0 and torch.all(kl.grad[1] == 0.5)
    assert free_bits(kl, 0.0).item() == pytest.approx(2.5)  # off: the plain mean KL
