"""The evaluation that fills the device, on CUDA: the IW-NLL in chunks sized from free GPU memory,
MI and AU kept on the GPU, and the same numbers as the CPU (same noise, same estimator) to float
tolerance; the readout figures measured there.

Marked `cuda` and skipped, with the reason, where CUDA is absent; VAE_TEXT_CUDA_TESTS_DEVICE=cpu
runs the same bodies on the CPU (tests/test_cuda.py's pattern)."""

from __future__ import annotations

import pytest
import torch
from test_metrics import tiny_vae

from conftest import CUDA_MARKS
from conftest import CUDA_TESTS_DEVICE as DEVICE
from vae_text.metrics import EvalConfig, evaluate
from vae_text.metrics.base import EvalContext
from vae_text.metrics.information import ActiveUnits, MutualInformation
from vae_text.metrics.iw import chunk_budget_mb

pytestmark = CUDA_MARKS
SENTENCES = [[("a", "b", "c")[(i * j) % 3] for j in range(1 + i % 9)] for i in range(53)]


def test_the_device_evaluation_gives_the_cpu_numbers():
    model, vocab, split = tiny_vae(latent=5, steps=30, sentences=SENTENCES)
    cfg = EvalConfig(iw_samples=500, batch_size=11, progress=False)  # memory_mb null: from the device
    want = evaluate(model, split, vocab, cfg)
    got = evaluate(model.to(DEVICE), split, vocab, cfg)
    for key in ("nll_iw", "ppl_iw", "mi", "rec", "kl", "neg_elbo"):
        assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-4), key
    assert got["au"] == want["au"]
    assert got["au_variances"] == pytest.approx(want["au_variances"], rel=1e-4, abs=1e-6)
    assert got["readout_gflops"] > 0 and got["matmul_bound_gflops"] > 0


def test_mi_and_au_keep_their_tensors_on_the_evaluation_device():
    model, vocab, split = tiny_vae(latent=4, steps=5)
    device = torch.device(DEVICE)
    ctx = EvalContext(model.to(device), split, EvalConfig(progress=False), vocab, device=device)
    for cls in (MutualInformation, ActiveUnits):
        assert cls(ctx).keep == device
    if device.type == "cuda":  # sized from the memory free now: at least a chunk of its logits
        assert chunk_budget_mb(None, device) > 0
