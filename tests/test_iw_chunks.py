"""The evaluation sized from the device: the IW pass's chunk budget (vae_text.metrics.iw), the
readout's FLOP count against the split's own token counts, the matmul bound's arithmetic, the
figures in the evaluation's output, and the MI pairs' chunk (vae_text.metrics.information).
The same code on a GPU: tests/test_cuda_eval.py."""

import math

import pytest
import torch
from test_metrics import tiny_vae

from vae_text.core.errors import ConfigError
from vae_text.data.corpus import collate
from vae_text.metrics import EvalConfig, evaluate, iw_log_likelihood, mutual_information
from vae_text.metrics import iw as iw_module
from vae_text.metrics.information import mi_chunk
from vae_text.metrics.iw import Readout, chunk_budget_mb, chunk_rows, matmul_gflops, readout_line
from vae_text.model.latent import DiagonalGaussian


def test_the_chunk_budget_is_the_given_value_else_a_share_of_free_gpu_memory_else_cache_sized(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 1)
    assert chunk_budget_mb(7, gpu) == 7 and chunk_budget_mb(7, cpu) == 7
    assert chunk_budget_mb(None, cpu) == 64
    asked = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: asked.append(d) or (12 * 2**30, 80 * 2**30))
    assert chunk_budget_mb(None, gpu) == 2048 and asked == [gpu]  # a quarter of 12 GiB, 3072, down to 2**11
    # a resumed evaluation finds a little more or less free: the same chunks, so the same estimates
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: (11 * 2**30, 80 * 2**30))
    assert chunk_budget_mb(None, gpu) == 2048
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: (2**18, 80 * 2**30))  # almost full
    assert chunk_budget_mb(None, gpu) == 1
    # 3 float32 copies of (rows, 23, 1000) logits: 1 MiB holds 3 rows of them, never fewer than 1
    assert chunk_rows(1, 1000, 23) == 2**20 // (3 * 4 * 1000 * 23) == 3
    assert chunk_rows(1e-6, 1000, 23) == 1


def test_memory_mb_is_null_or_a_positive_integer():
    assert EvalConfig().memory_mb is None and EvalConfig(memory_mb=5).memory_mb == 5
    with pytest.raises(ConfigError, match=r"^eval.memory_mb=0 is invalid: a positive integer \(or null"):
        EvalConfig(memory_mb=0)


@pytest.mark.parametrize("memory_mb", [None, 1e-4])
def test_the_readout_count_is_two_hidden_vocab_flops_per_scored_token(memory_mb):
    model, vocab, split = tiny_vae(latent=3, steps=5)
    batch = collate(split, torch.arange(len(split)))
    done = Readout()
    plain = iw_log_likelihood(model, batch, 11, seed=2, memory_mb=memory_mb)
    counted = iw_log_likelihood(model, batch, 11, seed=2, memory_mb=memory_mb, readout=done)
    torch.testing.assert_close(counted, plain, rtol=0, atol=0)  # counting changes no number
    words = [len(s) + 1 for s in ([["a"], ["b", "c"], ["c", "c", "a"], ["b"], ["a", "b"], ["c"]])]  # + <eos>
    assert done.flops == 2 * 8 * len(vocab) * 11 * sum(words)  # decoder_hidden 8, K = 11
    # the bound's shape: the largest chunk's tokens, one (sentence, sample) row a chunk at 1e-4 MB
    assert done.tokens == (max(words) if memory_mb else 11 * sum(words))
    assert done.seconds > 0


def test_the_matmul_bound_counts_its_products_over_the_time_they_took(monkeypatch):
    clock = iter(range(100))
    monkeypatch.setattr(iw_module.time, "perf_counter", lambda: 0.1 * next(clock))
    # start at 0.0; 5 products, 0.1 s < 0.2; 5 more, 0.2 s: stop; the end read at 0.3 s
    assert matmul_gflops(13, 6, 17, torch.device("cpu")) == pytest.approx(2 * 13 * 6 * 17 * 10 / 0.3 / 1e9)


def test_an_evaluation_reports_the_readout_against_the_bound_for_k_above_one():
    model, vocab, split = tiny_vae(latent=2, steps=5)
    out = evaluate(model, split, vocab, EvalConfig(iw_samples=9, batch_size=4, progress=False))
    assert out["readout_gflops"] > 0 and out["matmul_bound_gflops"] > 0
    assert readout_line({"readout_gflops": 1.5, "matmul_bound_gflops": 6.0}) == (
        "readout: 1.5 GFLOP/s, 25% of the matmul bound 6.0 GFLOP/s measured on the same shapes")
    one = evaluate(model, split, vocab, EvalConfig(iw_samples=1, progress=False))
    assert "readout_gflops" not in one and "matmul_bound_gflops" not in one


def test_mi_pairs_chunk_is_512_on_a_cpu_and_sized_from_free_gpu_memory(monkeypatch):
    assert mi_chunk(3000, 32, torch.device("cpu")) == 512
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: (2**30, 80 * 2**30))
    # a quarter of 1 GiB over 4 float64 copies of a (3000, 32) row
    assert mi_chunk(3000, 32, torch.device("cuda")) == 2**30 // 4 // (4 * 3000 * 32 * 8) == 87
    assert mi_chunk(5, 3, torch.device("cuda")) == 5  # never more rows than sentences


def test_mi_does_not_depend_on_the_pairs_chunk():
    g = torch.Generator().manual_seed(3)
    mu, logvar = torch.randn(37, 4, generator=g), torch.randn(37, 4, generator=g) * 0.3
    q = DiagonalGaussian(mu, logvar)
    z = q.rsample(eps=torch.randn(37, 4, generator=g))
    whole = mutual_information(q, z, chunk=37)
    assert 0 < whole <= math.log(37)
    for chunk in (1, 5, 512):
        assert mutual_information(q, z, chunk=chunk) == pytest.approx(whole, rel=1e-12)
