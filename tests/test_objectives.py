"""The objective protocol as the loop uses it: the `elbo` objective against hand-computed values in
every free-bits mode, in one process and over shares of a batch; its config; an objective's state
through checkpoints; K posterior draws per sentence."""

from __future__ import annotations

import threading

import pytest
import torch

from conftest import compose_cfg, tiny_overrides
from vae_text import objectives
from vae_text.config import ObjectiveConfig, TrainRunConfig
from vae_text.core.errors import CheckpointError, ConfigError
from vae_text.model.textvae import Output
from vae_text.objectives import OBJECTIVES, Elbo, Objective, StepInput, elbo_loss
from vae_text.run.checkpoint import load_checkpoint, save_checkpoint
from vae_text.run.parts import train_settings
from vae_text.train import train

# batch 3, latent 4 (test_objective.py's free-bits case); rec 10, 20, 30; KL 2.5, 2.1, 4.4 nats
REC = torch.tensor([10.0, 20.0, 30.0])
KL = torch.tensor([[0.1, 2.0, 0.4, 0.0],
                   [0.2, 1.0, 0.8, 0.1],
                   [0.3, 3.0, 0.9, 0.2]])
BETA = 0.5
# the KL term of the loss, per sentence, worked by hand:
# dim, 2 nats (0.5 a dimension): batch means 0.2, 2.0, 0.7, 0.1 -> 0.5 + 2.0 + 0.7 + 0.5 = 3.7
# sentence, 2.4 nats: max(2.4, 2.5) + max(2.4, 2.1) + max(2.4, 4.4) = 9.3 -> 3.1
# element, 2 nats (0.5 an element): 3.5 + 2.8 + 4.9 = 11.2 -> 11.2 / 3
CASES = [("dim", 2.0, 3.7), ("sentence", 2.4, 3.1), ("element", 2.0, 11.2 / 3), ("dim", 0.0, 3.0)]


def elbo(mode: str, budget: float) -> Elbo:
    return Elbo(ObjectiveConfig(kl_weight=1.0, free_bits=budget, free_bits_mode=mode))


def step_input(rec, kl, share=1.0, batch_size=3, reduce=lambda t: t.detach().double()) -> StepInput:
    return StepInput(Output(rec, kl), None, 1, batch_size, share, 0, BETA, reduce)


@pytest.mark.parametrize("mode,budget,kl_term", CASES)
def test_elbo_objective_is_the_hand_computed_loss_and_statistics(mode, budget, kl_term, monkeypatch):
    by_function = elbo_loss(REC, KL, BETA, budget, mode).item()
    calls = []
    rule = objectives.elbo.free_bits_kl
    monkeypatch.setattr(objectives.elbo, "free_bits_kl", lambda *a: calls.append(1) or rule(*a))
    kl = KL.clone().requires_grad_()
    result = elbo(mode, budget)(step_input(REC, kl))
    assert result.loss.item() == pytest.approx(20.0 + BETA * kl_term)
    assert result.loss.item() == pytest.approx(by_function)
    assert {k: v.item() for k, v in result.stats.items()} == pytest.approx(
        {"loss": 20.0 + BETA * kl_term, "rec": 20.0, "kl": 3.0})
    assert all(v.dim() == 0 for v in result.stats.values())
    assert len(calls) == 1  # one free-bits term, for the loss and the logged loss alike
    result.loss.backward()
    if mode == "dim" and budget > 0:  # dimensions 0 and 3 are under their 0.5 nats: no gradient
        assert kl.grad[:, [0, 3]].abs().sum() == 0
        torch.testing.assert_close(kl.grad[:, 1], torch.full((3,), BETA / 3))


@pytest.mark.parametrize("mode,budget,kl_term", CASES)
def test_elbo_over_three_processes_adds_up_to_the_whole_batch(mode, budget, kl_term):
    """Rows 0 | 1, 2 | none (the third process gets row 0 with share 0): the shares' losses and
    gradients add up to the whole batch's and every process logs the whole batch's statistics."""
    shares = [(slice(0, 1), 1.0), (slice(1, 3), 1.0), (slice(0, 1), 0.0)]
    barrier, sent, results, grads = threading.Barrier(3), {}, {}, {}

    def reduce_as(rank):
        def reduce(t):
            sent[rank] = t.detach().double()
            barrier.wait()
            total = sum(sent[r] for r in range(3))
            barrier.wait()
            return total
        return reduce

    def process(rank):
        rows, share = shares[rank]
        kl = KL[rows].clone().requires_grad_()
        results[rank] = elbo(mode, budget)(step_input(REC[rows], kl, share, 3, reduce_as(rank)))
        results[rank].loss.backward()
        grads[rank] = kl.grad

    threads = [threading.Thread(target=process, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    whole_kl = KL.clone().requires_grad_()
    whole = elbo(mode, budget)(step_input(REC, whole_kl))
    whole.loss.backward()
    assert sum(r.loss.item() for r in results.values()) == pytest.approx(whole.loss.item())
    torch.testing.assert_close(torch.cat([grads[0], grads[1]]), whole_kl.grad)
    assert grads[2].abs().sum() == 0
    for r in results.values():
        assert {k: v.item() for k, v in r.stats.items()} == pytest.approx(
            {k: v.item() for k, v in whole.stats.items()})


def test_the_objective_config_names_a_registered_objective_and_its_options(corpus_dir):
    settings = TrainRunConfig.from_cfg(compose_cfg(tiny_overrides(corpus_dir, "objective=elbo")))
    assert settings.objective.name == "elbo" and settings.objective.args == {}
    assert OBJECTIVES["elbo"] is Elbo
    # names are checked where the registries are (vae_text.run.parts), before any folder
    with pytest.raises(ConfigError, match=r"objective.name='nope' is unknown: choose one of .*elbo"):
        train_settings(compose_cfg(tiny_overrides(corpus_dir, "objective.name=nope")))
    with pytest.raises(ConfigError, match=r"objective.args.decay is not an option of objective.name=elbo: it takes none"):
        train_settings(compose_cfg(tiny_overrides(corpus_dir, "objective.args.decay=0.5")))


class RunningRec(Elbo):
    """The ELBO with a running mean of the train rec as state (a stand-in for a multiplier)."""

    name = "running_rec"
    needs_latent = True
    state_keys = ("steps", "mean_rec")

    def __init__(self, cfg, decay: float = 0.9):
        super().__init__(cfg)
        self.decay, self.steps, self.mean_rec = decay, 0, 0.0

    def after_step(self, stats):
        self.steps += 1
        self.mean_rec = self.decay * self.mean_rec + (1 - self.decay) * float(stats["rec"])


@pytest.fixture
def running_rec():
    OBJECTIVES[RunningRec.name] = RunningRec
    yield ["objective.name=running_rec", "objective.args.decay=0.75"]
    del OBJECTIVES[RunningRec.name]


def test_an_objectives_state_resumes_exactly_and_another_objective_is_refused(
        corpus_dir, tmp_path, running_rec):
    run = lambda name, steps, *extra: train(compose_cfg(tiny_overrides(  # noqa: E731
        corpus_dir, *running_rec, f"train.max_steps={steps}", *extra)), tmp_path / name)
    run("one", 12)
    run("first", 5)
    run("second", 12, f"train.resume={tmp_path / 'first'}")
    one, first, second = (load_checkpoint(tmp_path / n, "last.pt") for n in ("one", "first", "second"))
    assert first["objective"]["steps"] == 5 and one["objective"]["steps"] == 12
    assert one["objective"] == second["objective"]  # the running mean to the last bit
    assert one["objective"]["mean_rec"] > 0
    with pytest.raises(CheckpointError, match="objective=running_rec but objective=elbo now"):
        train(compose_cfg(tiny_overrides(corpus_dir, "train.max_steps=12",
                                         f"train.resume={tmp_path / 'first'}")), tmp_path / "other")
    # a checkpoint from before objectives had state: the objective starts afresh, the run goes on
    blob = load_checkpoint(tmp_path / "first", "last.pt")
    del blob["objective"]
    save_checkpoint(tmp_path / "first" / "checkpoints" / "last.pt", blob)
    run("fresh", 12, f"train.resume={tmp_path / 'first'}")
    assert load_checkpoint(tmp_path / "fresh", "last.pt")["objective"]["steps"] == 7


def test_an_objective_with_k_samples_gets_each_sentence_k_times_sentence_major(corpus_dir, tmp_path):
    from vae_text.data.batches import collate
    from vae_text.run.trainer import Trainer

    class Recorder(Objective):
        samples = 3

        def __call__(self, inp):
            self.inp = inp
            return Elbo(self.cfg)(inp)

    cfg = compose_cfg(tiny_overrides(corpus_dir))
    t = Trainer(cfg, TrainRunConfig.from_cfg(cfg), tmp_path)
    t.objective = Recorder(t.s.objective)
    batch = collate(t.corpus["train"], list(range(5)))
    t.run_objective(batch, 1.0, 11)
    inp = t.objective.inp
    assert inp.samples == 3 and inp.batch_size == 5 and inp.out.rec.shape == (15,)
    mean = inp.out.posterior.mean.detach().view(5, 3, -1)  # (B, K, Z)
    torch.testing.assert_close(mean, mean[:, :1].expand_as(mean))  # one sentence per K rows
    assert not torch.equal(mean[0, 0], mean[1, 0])
    z = inp.out.z.detach().view(5, 3, -1)
    assert not torch.equal(z[:, 0], z[:, 1])  # K different draws of z
