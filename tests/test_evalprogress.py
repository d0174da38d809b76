"""The resumable IW-NLL (vae_text.metrics.progress): an evaluation cut short goes on where it stopped,
with the numbers an uninterrupted one gives, and never takes estimates made for other weights or
settings."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, compose_cfg, tiny_overrides
from vae_text.data.batches import batch_plan
from vae_text.data.corpus import encode_split, read_sentences
from vae_text.metrics import EvalConfig, evaluate, evaluate_to
from vae_text.metrics import iw as metrics  # where the IW-NLL metric looks its estimator up
from vae_text.metrics.progress import progress_file
from vae_text.run.checkpoint import load_model
from vae_text.train import train

CFG = EvalConfig(iw_samples=13, batch_size=8, progress=False)  # 37 test sentences: 5 batches


@pytest.fixture
def setup(corpus_dir, tmp_path):
    run = tmp_path / "run"
    train(compose_cfg(tiny_overrides(corpus_dir, "eval.iw_samples=2", "train.max_steps=6")), run)
    model, vocab, _ = load_model(run)
    split = encode_split(read_sentences(corpus_dir / "ptb.test.txt")[0], vocab)
    return run, model, vocab, split


class Counting:
    """metrics.iw.iw_log_likelihood, counted, cut short (KeyboardInterrupt) at call `stop_at`."""

    def __init__(self, stop_at: int | None = None):
        self.calls, self.stop_at, self.real = 0, stop_at, metrics.iw_log_likelihood

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return self.real(*args, **kwargs)


TIMINGS = ("seconds", "readout_gflops", "matmul_bound_gflops")  # wall-clock figures, not estimates


def without_time(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in TIMINGS}


def cut_short(monkeypatch, out, model, vocab, split, stop_at=3):
    monkeypatch.setattr(metrics, "iw_log_likelihood", Counting(stop_at))
    with pytest.raises(KeyboardInterrupt):
        evaluate_to(out, model, split, vocab, CFG)
    assert not out.exists() and progress_file(out).is_file()


def test_a_cut_short_evaluation_resumes_with_the_same_numbers(setup, tmp_path, monkeypatch):
    _, model, vocab, split = setup
    batches = len(batch_plan(split, CFG.batch_size, shuffle=False))
    want = evaluate(model, split, vocab, CFG)
    out = tmp_path / "eval.json"
    cut_short(monkeypatch, out, model, vocab, split, stop_at=3)
    saved = torch.load(progress_file(out), weights_only=True)
    assert len(saved["index"]) == len(set(saved["index"].tolist())) > 0  # the two batches done

    counting = Counting()
    monkeypatch.setattr(metrics, "iw_log_likelihood", counting)
    got = evaluate_to(out, model, split, vocab, CFG)
    assert counting.calls == batches - 2  # only the batches not done before
    assert without_time(got) == without_time(want)  # bit for bit: nll_iw, ppl_iw and the rest
    assert json.loads(out.read_text())["nll_iw"] == want["nll_iw"]
    assert not progress_file(out).exists()  # removed once the results are written


def test_estimates_of_other_weights_or_settings_are_not_taken(setup, tmp_path, monkeypatch):
    _, model, vocab, split = setup
    batches = len(batch_plan(split, CFG.batch_size, shuffle=False))
    out = tmp_path / "eval.json"
    cut_short(monkeypatch, out, model, vocab, split)
    with torch.no_grad():  # other weights: everything is estimated again, for these weights
        next(model.parameters()).add_(0.01)
    want = evaluate(model, split, vocab, CFG)
    counting = Counting()
    monkeypatch.setattr(metrics, "iw_log_likelihood", counting)
    assert without_time(evaluate_to(out, model, split, vocab, CFG)) == without_time(want)
    assert counting.calls == batches

    out.unlink()
    cut_short(monkeypatch, out, model, vocab, split)  # other settings (K): the same
    other = EvalConfig(iw_samples=14, batch_size=8, progress=False)
    want = evaluate(model, split, vocab, other)
    counting = Counting()
    monkeypatch.setattr(metrics, "iw_log_likelihood", counting)
    assert without_time(evaluate_to(out, model, split, vocab, other)) == without_time(want)
    assert counting.calls == batches


def test_a_torn_progress_file_is_only_a_lost_head_start(setup, tmp_path):
    _, model, vocab, split = setup
    out = tmp_path / "eval.json"
    progress_file(out).write_bytes(b"\x80\x04 not a torch file")
    assert without_time(evaluate_to(out, model, split, vocab, CFG)) == \
        without_time(evaluate(model, split, vocab, CFG))
    assert not progress_file(out).exists()


@pytest.mark.slow
def test_evaluate_killed_mid_iw_resumes_from_its_progress_file(setup, tmp_path):
    """A real SIGKILL of `python -m vae_text.evaluate`, then the same command again."""
    run, *_ = setup
    args = [sys.executable, "-m", "vae_text.evaluate", f"checkpoint={run}", "iw_samples=300",
            "batch_size=8", "progress=false", "reconstruct=false"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ref = subprocess.run([*args, f"output={tmp_path / 'ref.json'}"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = run / "eval_test_k300.json"
    p = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    end = time.monotonic() + 240
    while not progress_file(out).is_file():
        assert p.poll() is None, "evaluate ended before its first batch was saved"
        assert time.monotonic() < end
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not out.exists()
    again = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already estimated" in again.stdout + again.stderr
    got, want = (json.loads(path.read_text()) for path in (out, tmp_path / "ref.json"))
    for key in ("nll_iw", "ppl_iw", "rec", "kl", "mi", "au"):
        assert got[key] == want[key], key
    assert not progress_file(out).exists() and not list(run.glob(".*.tmp"))


def test_the_fingerprint_reads_weights_of_any_dtype(setup):
    from vae_text.metrics.progress import fingerprint

    _, model, _, split = setup
    a = fingerprint(model, split, {"iw_samples": 5})
    assert a == fingerprint(model, split, {"iw_samples": 5})
    assert a != fingerprint(model, split, {"iw_samples": 6})
    assert a != fingerprint(model, split.head(20), {"iw_samples": 5})
    assert fingerprint(model.to(torch.bfloat16), split, {"iw_samples": 5}) != a
