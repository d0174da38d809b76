"""train.compile (vae_text.run.compiled): the compiled or captured step computes the eager step.

The reference is always the eager step of the same Trainer config, seed, batch and noise seed:
loss and every parameter's gradient to float32 tolerance (rtol 1e-4, atol 1e-5: inductor fuses and
reorders the sums, so the last bits differ; a wrong mask or another dropout draw is off by far more).
Bucket padding (cudagraphs' static shapes) is checked on the CPU against the unpadded eager forward.
The CUDA tests are marked `cuda` and skipped where CUDA is absent.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch._dynamo.utils import counters

from conftest import compose_cfg, tiny_overrides
from vae_text.core.errors import ConfigError
from vae_text.data.batches import collate
from vae_text.run.compiled import StepForward, bucket_lengths, check_compile, pad_to_bucket
from vae_text.run.parts import train_settings
from vae_text.run.trainer import Trainer
from vae_text.train import train

TOL = {"rtol": 1e-4, "atol": 1e-5}
# ptb-shaped: LSTM encoder and decoder, gaussian posterior, every kind of noise on
NOISY = ["model.embed_dropout=0.2", "model.output_dropout=0.3", "model.word_dropout=0.25"]
NO_DROPOUT = ["model.embed_dropout=0", "model.output_dropout=0"]
TRANSFORMERS = ["model/decoder=transformer", "model/encoder=transformer"]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available here")


def trainer(corpus_dir, tmp_path, mode: str, *extra: str, device: str = "cpu") -> Trainer:
    cfg = compose_cfg(tiny_overrides(corpus_dir, *NOISY, f"train.compile={mode}",
                                     f"device={device}", *extra))
    return Trainer(cfg, train_settings(cfg), tmp_path / mode)


def step(t: Trainer, index: list[int], seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss and gradients of one step on the sentences `index`; dropout drawn from `seed`."""
    batch = collate(t.corpus["train"], torch.tensor(index))
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    t.model.zero_grad(set_to_none=True)
    loss = t.run_objective(batch, 0.7, t.noise_seed(seed)).loss
    loss.backward()
    return loss.detach().cpu(), {n: p.grad.cpu() for n, p in t.model.named_parameters()
                                 if p.grad is not None}


def assert_same_steps(eager: Trainer, fast: Trainer, batches: list[list[int]]) -> None:
    assert eager.s.seed == fast.s.seed
    for name, p in eager.model.named_parameters():  # the same initial weights
        torch.testing.assert_close(p, dict(fast.model.named_parameters())[name], rtol=0, atol=0)
    for i, index in enumerate(batches):
        loss, grads = step(eager, index, i)
        loss_fast, grads_fast = step(fast, index, i)
        torch.testing.assert_close(loss_fast, loss, **TOL)
        assert grads.keys() == grads_fast.keys() and len(grads) > 10
        for name, grad in grads.items():
            torch.testing.assert_close(grads_fast[name], grad, **TOL, msg=name)


# two batch sizes and lengths: a shape change must not recompile into something else
BATCHES = [list(range(7)), list(range(20, 25)), list(range(24, 31))]  # (7, 11) (5, 12) (7, 13)


@pytest.mark.slow
def test_compiled_step_gives_the_eager_loss_and_gradients(corpus_dir, tmp_path):
    eager, fast = (trainer(corpus_dir, tmp_path, m) for m in ("none", "compile"))
    assert len({collate(eager.corpus["train"], torch.tensor(b)).tokens.shape for b in BATCHES}) == 3
    counters.clear()
    assert_same_steps(eager, fast, BATCHES)
    # dynamo compiled graphs (the glue around the LSTMs, which it leaves to eager), not nothing
    assert counters["stats"]["unique_graphs"] >= 1
    # the dropout draws matter: another seed gives another loss, so the match above is no accident
    assert not torch.equal(step(eager, BATCHES[0], 5)[0], step(eager, BATCHES[0], 6)[0])


@pytest.mark.slow  # 66 s on 2 CPU cores at load average 9.8
def test_the_cudagraphs_forward_on_the_cpu_gives_the_eager_loss_and_gradients(corpus_dir, tmp_path):
    """Everything of cudagraphs but the capture (inductor captures CUDA graphs only): the bucket
    padding, static shapes and compile options give eager's loss and gradients. Without dropout:
    a mask drawn over the padded (B, bucket, E) lands on other positions than eager's over (B, T, E)
    (a different draw from the same seed); word dropout, drawn on the host, stays on."""
    eager, fast = (trainer(corpus_dir, tmp_path, "none", *NO_DROPOUT) for _ in range(2))
    buckets = bucket_lengths(fast.corpus["train"].lengths)
    lengths = [int(eager.corpus["train"].lengths[b].max()) for b in BATCHES]
    assert len(buckets) == 3 and set(lengths) - set(buckets)  # a batch is padded
    fast.forward = StepForward(fast.net, "cudagraphs", fast.model.pad_id, buckets)
    assert_same_steps(eager, fast, BATCHES)


@pytest.mark.slow  # 145 s on 2 CPU cores at load average 9.7 (not timed on a quiet machine)
def test_compiled_transformer_step_gives_the_eager_loss_and_gradients(corpus_dir, tmp_path):
    eager, fast = (trainer(corpus_dir, tmp_path, m, *TRANSFORMERS) for m in ("none", "compile"))
    assert_same_steps(eager, fast, BATCHES[:2])


@pytest.mark.slow  # 70 s on 2 loaded CPU cores: compiling, then five steps twice
def test_a_compiled_run_logs_the_eager_run_losses(corpus_dir, tmp_path):
    losses = {}
    for mode in ("none", "compile"):
        cfg = compose_cfg(tiny_overrides(corpus_dir, *NOISY, f"train.compile={mode}", "device=cpu",
                                         "train.max_steps=5", "train.log_every=1", "eval.iw_samples=0"))
        train(cfg, tmp_path / mode)
        lines = [json.loads(line) for line in (tmp_path / mode / "metrics.jsonl").read_text().splitlines()]
        losses[mode] = torch.tensor([x["train/loss"] for x in lines if "train/loss" in x])
    assert len(losses["none"]) == 5
    torch.testing.assert_close(losses["compile"], losses["none"], **TOL)


@pytest.mark.parametrize("parts", [[], TRANSFORMERS], ids=["lstm", "transformer"])
def test_bucket_padding_leaves_rec_and_kl_unchanged(corpus_dir, tmp_path, parts):
    """The cudagraphs padding, eager on the CPU: <pad> past every length is never read."""
    tr = trainer(corpus_dir, tmp_path, "none", *parts)
    t = tr.model.eval()  # no dropout: the same forward twice
    batch = collate(tr.corpus["train"], torch.arange(9))
    B, T = batch.tokens.shape
    eps, noise = torch.randn(B, t.noise_size), torch.rand(B, T)
    t.word_dropout_rate = 0.3
    tokens, padded_noise = pad_to_bucket(batch.tokens, noise, (T - 2, T + 5, T + 9), t.pad_id)
    assert tokens.shape == (B, T + 5) and padded_noise.shape == (B, T + 5)
    assert (tokens[:, T:] == t.pad_id).all() and (padded_noise[:, T:] == 1).all()
    ref = t(batch.tokens, batch.lengths, eps=eps, word_noise=noise)
    out = t(tokens, batch.lengths, eps=eps, word_noise=padded_noise)
    torch.testing.assert_close(out.rec, ref.rec, **TOL)
    torch.testing.assert_close(out.kl, ref.kl, **TOL)
    # the check can fail: a real token in the padding changes the loss
    tokens[:, T] = 5
    assert not torch.allclose(t(tokens, batch.lengths + 1, eps=eps, word_noise=padded_noise).rec, ref.rec)


def test_bucket_lengths_are_the_quantiles_of_the_training_lengths():
    lengths = torch.tensor([20, 3, 5, 13, 5, 8, 12, 9])
    assert bucket_lengths(lengths, 4) == (5, 9, 13, 20)  # sorted: 3 5 5 8 9 12 13 20
    assert bucket_lengths(torch.tensor([4, 4, 4]), 3) == (4,)
    tokens = torch.ones(2, 21, dtype=torch.long)  # longer than every bucket: left as it is
    assert pad_to_bucket(tokens, None, (5, 9), 0)[0].shape == (2, 21)


def test_compile_mode_errors_are_one_line_and_name_the_key(corpus_dir):
    with pytest.raises(ConfigError, match=r"train\.compile='jit' is invalid") as e:
        train_settings(compose_cfg(tiny_overrides(corpus_dir, "train.compile=jit")))
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"train\.compile=cudagraphs needs a CUDA device") as e:
        check_compile("cudagraphs", torch.device("cpu"))
    assert "\n" not in str(e.value) and "train.compile=compile" in str(e.value)
    check_compile("compile", torch.device("cpu"))


@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize("mode", ["compile", "cudagraphs"])
def test_cuda_compiled_and_captured_steps_give_the_eager_loss_and_gradients(corpus_dir, tmp_path, mode):
    extra = NO_DROPOUT if mode == "cudagraphs" else []  # padding moves the masks (see above)
    eager = trainer(corpus_dir, tmp_path, "none", *extra, device="cuda")
    fast = trainer(corpus_dir, tmp_path, mode, *extra, device="cuda")
    assert_same_steps(eager, fast, BATCHES + BATCHES[:1])  # the last replays a captured graph


@pytest.mark.cuda
@CUDA
def test_cuda_captured_run_logs_the_eager_run_losses(corpus_dir, tmp_path):
    losses = {}
    for mode in ("none", "cudagraphs"):
        cfg = compose_cfg(tiny_overrides(corpus_dir, *NOISY, *NO_DROPOUT, f"train.compile={mode}", "device=cuda",
                                         "train.max_steps=6", "train.log_every=1", "eval.iw_samples=0"))
        train(cfg, tmp_path / mode)
        lines = [json.loads(line) for line in (tmp_path / mode / "metrics.jsonl").read_text().splitlines()]
        losses[mode] = torch.tensor([x["train/loss"] for x in lines if "train/loss" in x])
    torch.testing.assert_close(losses["cudagraphs"], losses["none"], **TOL)
