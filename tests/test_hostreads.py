"""A training step reads nothing back from the device: counted on the CPU with
vae_text.run.hostreads, which counts the calls that would make the host wait on a GPU."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY, compose_cfg
from vae_text.data.batches import batch_plan, iterate
from vae_text.run import loop
from vae_text.run.divergence import DivergenceWatch, TrainingDiverged
from vae_text.run.hostreads import HostReads
from vae_text.run.logger import TrainWindow
from vae_text.run.parts import train_settings
from vae_text.run.trainer import Trainer


def test_the_counter_counts_each_kind_of_read_and_no_plain_operator():
    a, tolist = torch.arange(12.0).view(3, 4), torch.Tensor.tolist
    with HostReads() as c:
        b = (a * 2).sum(0)  # (4,) operators only
        assert c.reads == 0 and c.ops == 2
        b[0].item()
        float(b[1])
        bool(b[2] > 0)
        b.tolist()
        b.cpu()
        torch.equal(a, a)
    assert c.where == {"_local_scalar_dense": 3, "Tensor.tolist": 1, "Tensor.cpu": 1, "equal": 1}
    assert c.reads == 6
    assert torch.Tensor.tolist is tolist  # Tensor's methods as they were, once the mode exits


def test_a_host_resident_tensor_is_read_for_free():
    lengths, other = torch.tensor([5, 3, 9]), torch.tensor([2.0])
    with HostReads(host=[lengths]) as c:
        lengths.tolist(), int(lengths[2]), other.item()  # a view of `lengths` shares its storage
    assert c.reads == 1 and c.where == {"_local_scalar_dense": 1}


def ptb_trainer(corpus_dir, tmp_path, *extra: str) -> Trainer:
    """The ptb experiment's model and objective at the tests' tiny sizes (log every 5 steps)."""
    cfg = compose_cfg(["+experiment=ptb", f"data.dir={corpus_dir}",
                       f"data.cache_dir={corpus_dir}/cache", "data.hub=null", *TINY, *extra])
    return Trainer(cfg, train_settings(cfg), tmp_path / "run")


@pytest.mark.parametrize("extra", [
    [],
    ["objective=mdr", "objective.args.rate=3.0"],  # a multiplier updated after every step
    ["objective.free_bits=2.0", "optim.clip_norm=0.5"],  # free bits' second reduce, clipping
], ids=["ptb", "mdr", "free_bits"])
def test_a_step_reads_nothing_back_and_a_log_step_reads_twice(corpus_dir, tmp_path, extra):
    t = ptb_trainer(corpus_dir, tmp_path, *extra)
    split = t.corpus["train"]
    t.plan = plan = batch_plan(split, t.s.train.batch_size, shuffle=True, seed=t.s.seed)
    batches, window = iterate(split, plan), TrainWindow()
    window.add(t.train_step(next(batches)))  # the optimizer's state is made on its first step
    for _ in range(3):
        batch = next(batches)
        with HostReads(host=[batch.lengths, batch.tokens]) as c:  # the batch: still on the host
            window.add(t.train_step(batch))
        assert (c.reads, dict(c.where)) == (0, {})
        assert c.ops > 100  # the counter did see the step
    with HostReads() as c:
        stats = loop.read_window(t, window, seconds=1.0)
    assert c.reads == 2, c.where  # whether a step diverged; the window's sums, in one copy
    assert t.state.step == 4 and all(isinstance(v, float) for v in stats.values())
    if "objective=mdr" in extra:  # lambda: on the statistics' device, read only when saved
        assert stats["lambda"] >= 0 and t.objective.state_dict()["lam"].dtype == torch.float64


def test_the_first_non_finite_step_is_named_when_read():
    watch, run = DivergenceWatch(), __import__("pathlib").Path("/nonexistent")
    for step, loss, norm in [(1, 3.0, 1.5), (2, 2.5, 1.0)]:
        watch.update(torch.tensor(loss, dtype=torch.float64), torch.tensor(norm), step)
    watch.check(run)  # finite so far: no error
    watch.update(torch.tensor(4.0, dtype=torch.float64), torch.tensor(float("inf")), 3)
    watch.update(torch.tensor(float("nan"), dtype=torch.float64), torch.tensor(float("nan")), 4)
    with pytest.raises(TrainingDiverged, match="at step 3: the gradient norm is inf; no checkpoint"):
        watch.check(run)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available here")
def test_on_cuda_batches_arrive_ahead_and_a_step_copies_nothing_back(corpus_dir, tmp_path):
    t = ptb_trainer(corpus_dir, tmp_path, "device=cuda")
    split = t.corpus["train"]
    t.plan = plan = batch_plan(split, t.s.train.batch_size, shuffle=True, seed=t.s.seed)
    batches, window = iterate(split, plan, device=t.device), TrainWindow()
    first = next(batches)
    assert first.tokens.is_cuda and first.lengths.is_cuda and not first.index.is_cuda
    assert first.num_tokens == sum(first.lengths.tolist())  # from the host copy of the lengths
    window.add(t.train_step(first))
    for _ in range(3):
        batch = next(batches)  # the next one's pinned copy is queued before this is handed out
        with HostReads() as c:  # here every tensor of the step is a device tensor: no exemption
            window.add(t.train_step(batch))
        assert (c.reads, dict(c.where)) == (0, {})
    with HostReads() as c:
        stats = loop.read_window(t, window, seconds=1.0)
    assert c.reads == 2 and stats["loss"] > 0
