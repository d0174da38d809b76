import json
import subprocess
import sys

import pytest

from conftest import ROOT, compose_cfg, tiny_overrides
from vae_text.data.corpus import encode_split, read_sentences
from vae_text.metrics import EvalConfig, evaluate
from vae_text.run.checkpoint import load_model
from vae_text.train import train


def run_eval(*args):
    return subprocess.run([sys.executable, "-m", "vae_text.evaluate", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def trained(corpus_dir, tmp_path):
    run = tmp_path / "run"
    results = train(compose_cfg(tiny_overrides(corpus_dir, "eval.iw_samples=7")), run)
    return run, results


def test_training_ends_with_the_full_suite_on_test(trained):
    run, results = trained
    test = json.loads((run / "eval_test.json").read_text())
    assert test == results["test"]
    for key in ("rec", "kl", "neg_elbo", "ppl_elbo", "nll_iw", "ppl_iw", "mi", "mi_estimator",
                "au", "au_variances", "kl_per_dim", "token_accuracy", "recon_exact", "recon_bleu",
                "sentences", "tokens", "seconds"):
        assert key in test, key
    assert test["iw_samples"] == 7 and test["sentences"] == 37
    vals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("val/mi" in r and "val/au" in r for r in vals if "val/rec" in r)


@pytest.mark.slow
def test_evaluate_cli_writes_json_and_matches_the_library(trained, corpus_dir):
    run, _ = trained
    proc = run_eval(f"checkpoint={run}", "split=valid", "iw_samples=9", "progress=false")
    assert proc.returncode == 0, proc.stderr
    assert "| IW-NLL |" in proc.stdout and "| active units |" in proc.stdout
    written = json.loads((run / "eval_valid_k9.json").read_text())
    assert f"\nreadout: {written['readout_gflops']:.1f} GFLOP/s, " in proc.stdout  # K > 1: the figure shown
    assert written["split"] == "valid" and written["iw_samples"] == 9
    model, vocab, _ = load_model(run)
    split = encode_split(read_sentences(corpus_dir / "ptb.valid.txt")[0], vocab)
    expected = evaluate(model, split, vocab, EvalConfig(iw_samples=9, progress=False))
    for key in ("rec", "kl", "nll_iw", "mi", "au", "recon_bleu", "tokens"):
        assert written[key] == pytest.approx(expected[key], rel=1e-6), key


def test_evaluate_cli_language_model(corpus_dir, tmp_path):
    run = tmp_path / "lm"
    train(compose_cfg(tiny_overrides(corpus_dir, "model=lm", "train.max_steps=4")), run)
    proc = run_eval(f"checkpoint={run}/checkpoints/best.pt", "progress=false",
                    f"output={tmp_path}/lm.json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "lm.json").read_text())
    assert result["nll_estimator"] == "exact" and result["nll"] == result["neg_elbo"]
    assert "| NLL (exact) |" in proc.stdout


@pytest.mark.slow
def test_evaluate_cli_bad_inputs(trained, tmp_path):
    run, _ = trained
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    for args, message in [
        ([f"checkpoint={bad}"], "bad.pt: not a readable vae_text checkpoint"),
        ([f"checkpoint={tmp_path}/missing"], "checkpoint not found"),
        ([f"checkpoint={tmp_path}"], "no checkpoints/best.pt in this run directory"),
        ([f"checkpoint={run}", "split=dev"], "split='dev' is invalid"),
        ([f"checkpoint={run}", f"data_dir={tmp_path}/nodata"], "nodata/ptb.test.txt: file not found"),
    ]:
        proc = run_eval(*args)
        assert proc.returncode == 2, args
        assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
        assert message in proc.stderr, (args, proc.stderr)
