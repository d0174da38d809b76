"""The generation suite: each metric against a hand computation or an independent one."""

import dataclasses
import json
import math
import random
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, compose_cfg, make_sentences, tiny_overrides, write_corpus
from vae_text.config import EvaluateConfig, GenerationConfig, section
from vae_text.core.errors import ConfigError
from vae_text.data.tokenizer import Vocab
from vae_text.generation.suite import (
    copy_rate,
    distinct_n,
    forward_ppl,
    generation_suite,
    js_divergence,
    length_stats,
    prior_samples,
    reverse_ppl,
    self_bleu,
)
from vae_text.run.checkpoint import load_model
from vae_text.train import train


def words(*sentences):
    return [s.split() for s in sentences]


# --- diversity, by hand ---------------------------------------------------------------------------


def test_distinct_n_counts_unique_ngrams_over_the_set():
    s = words("a b a b", "a b c")
    assert distinct_n(s, 1) == pytest.approx(3 / 7)  # a b a b a b c: {a, b, c}
    assert distinct_n(s, 2) == pytest.approx(3 / 5)  # ab ba ab | ab bc
    assert distinct_n(s, 3) == pytest.approx(3 / 3)  # aba bab | abc
    assert distinct_n(words("a", "b"), 2) == 0.0  # no bigram at all


def test_self_bleu_by_hand():
    assert self_bleu(words("a b c d e", "a b c d e")) == pytest.approx(100.0)
    assert self_bleu(words("a b c d e", "f g h i j")) == pytest.approx(0.0)
    # precisions 4/5, 3/4, 2/3, 1/2, same length (no brevity penalty), both directions alike
    both = 100 * (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    assert self_bleu(words("a b c d e", "a b c d f")) == pytest.approx(both, rel=1e-6)
    # three sentences: the third shares nothing, so it scores 0 and the pair keeps 100
    assert self_bleu(words("a b c d e", "a b c d e", "v w x y z")) == pytest.approx(200 / 3)


def test_copy_rate_is_one_for_training_sentences():
    train = words("the cat sees", "a dog eats the fish", "x")
    assert copy_rate(train, train) == 1.0
    assert copy_rate(words("the cat sees", "the cat sees a", "x", "cat"), train) == pytest.approx(0.5)


def test_js_divergence_and_length_stats_by_hand():
    assert js_divergence([3, 4, 4], [4, 3, 4]) == pytest.approx(0.0)
    assert js_divergence([1, 1], [2, 2, 2]) == pytest.approx(math.log(2))
    # p = (1/2, 1/2), q = (1, 0), m = (3/4, 1/4)
    kl_pm = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    kl_qm = math.log(1 / 0.75)
    assert js_divergence([1, 1, 2, 2], [1, 1, 1, 1]) == pytest.approx((kl_pm + kl_qm) / 2)
    stats = length_stats(words("a", "a b c"), words("a b", "a b", "a b c d"))
    assert stats["length_mean"] == 2 and stats["length_std"] == 1
    assert stats["data_length_mean"] == pytest.approx(8 / 3)
    assert stats["data_length_std"] == pytest.approx(math.sqrt(((2 / 3) ** 2 * 2 + (4 / 3) ** 2) / 3))


# --- the two perplexities -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny VAE and a tiny language model trained on the same synthetic corpus."""
    root = tmp_path_factory.mktemp("gen")
    corpus = write_corpus(root / "corpus", sizes=(150, 30, 41))
    train(compose_cfg(tiny_overrides(corpus, "eval.iw_samples=2", "train.max_steps=30")), root / "vae")
    train(compose_cfg(tiny_overrides(corpus, "model=lm", "train.max_steps=30", "eval.iw_samples=0")),
          root / "lm")
    return root, corpus


def test_forward_ppl_is_the_reference_lms_exact_nll(runs):
    root, _ = runs
    lm, vocab, _ = load_model(root / "lm")
    samples = words("the cat sees the dog", "the zebra eats", "the big red car finds the child and")
    got = forward_ppl(lm, vocab, samples)
    # independent: each sentence alone through the decoder, log-softmax by hand
    nll, tokens = 0.0, 0
    for s in samples:
        ids = torch.tensor([vocab.encode(s)])
        inputs = torch.cat([torch.tensor([[vocab.bos_id]]), ids[:, :-1]], 1)
        with torch.no_grad():
            logits = lm.decoder(inputs, None, torch.ones_like(ids, dtype=torch.bool))
        nll -= float(logits.double().log_softmax(-1)[torch.arange(ids.shape[1]), ids[0]].sum())
        tokens += ids.shape[1]
    assert got["forward_nll"] == pytest.approx(nll / len(samples), rel=1e-5)
    assert got["forward_ppl"] == pytest.approx(math.exp(nll / tokens), rel=1e-5)
    assert got["forward_unk_rate"] == pytest.approx(1 / tokens)  # "zebra" only


def test_forward_ppl_refuses_a_vae_reference(runs):
    root, _ = runs
    vae, vocab, _ = load_model(root / "vae")
    with pytest.raises(ConfigError, match="gen.reference_lm"):
        forward_ppl(vae, vocab, words("the cat"))


def test_reverse_ppl_is_lower_when_the_samples_are_the_training_data():
    train_set = words(*make_sentences(300, 0))
    test_set = words(*make_sentences(60, 2))
    vocab = Vocab.build(train_set)
    rng = random.Random(0)
    pool = vocab.itos[4:]
    junk = [[rng.choice(pool) for _ in range(len(s))] for s in train_set]  # same lengths, no grammar
    cfg = GenerationConfig(reverse_epochs=8, reverse_lr=1e-2, reverse_embed=11, reverse_hidden=17)
    real, noise = reverse_ppl(train_set, test_set, vocab, cfg), reverse_ppl(junk, test_set, vocab, cfg)
    assert real < 0.6 * noise, (real, noise)
    assert noise < 2 * len(vocab)  # near uniform over the words at worst, never diverged


def test_prior_samples_are_seeded_and_end_at_max_len(runs):
    root, _ = runs
    vae, vocab, _ = load_model(root / "vae")
    cfg = GenerationConfig(samples=13, batch_size=5, max_len=4)
    a, b = prior_samples(vae, vocab, 13, cfg), prior_samples(vae, vocab, 13, cfg)
    assert a == b and len(a) == 13 and all(len(s) <= 4 for s in a)
    assert prior_samples(vae, vocab, 13, cfg, seed=7) != a


# --- config and CLI -------------------------------------------------------------------------------


def test_generation_config_checks_its_keys():
    with pytest.raises(ConfigError, match="gen.samples"):
        GenerationConfig(samples=0)
    with pytest.raises(ConfigError, match="gen.interpolation"):
        GenerationConfig(interpolation="cubic")
    cfg = section(EvaluateConfig, {"checkpoint": "x", "generation": True, "gen": {"samples": 7}}, "")
    assert cfg.generation and cfg.gen.samples == 7 and cfg.gen.reverse_epochs == 5


def run_eval(*args):
    return subprocess.run([sys.executable, "-m", "vae_text.evaluate", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


KEYS = ("forward_ppl", "reverse_ppl", "distinct_1", "distinct_2", "distinct_3", "self_bleu",
        "copy_rate", "length_mean", "probe_accuracy", "interpolation_smoothness")


@pytest.mark.slow
def test_evaluate_generation_true_writes_the_generation_object(runs, tmp_path):
    root, corpus = runs
    proc = run_eval(f"checkpoint={root / 'vae'}", "generation=true", "gen.samples=23",
                    "gen.reverse_epochs=1", f"gen.reference_lm={root / 'lm'}", "iw_samples=0",
                    "progress=false", f"output={tmp_path / 'e.json'}")
    assert proc.returncode == 0, proc.stderr
    gen = json.loads((tmp_path / "e.json").read_text())["generation"]
    assert all(gen[k] is not None for k in KEYS), gen
    assert gen["samples"] == 23 and len(gen["examples"]) == 10
    assert 0 <= gen["probe_chance"] <= 1 and gen["probe_classes"] >= 2
    assert len(gen["neighbours"]) == 5 and len(gen["neighbours"][0]["nearest_train"]) == 3
    assert "| reverse PPL |" in proc.stdout and "| distinct-2 |" in proc.stdout
    # no reference LM: forward PPL is skipped with a note, the rest still runs
    proc = run_eval(f"checkpoint={root / 'lm'}", "generation=true", "gen.samples=9",
                    "gen.reverse_epochs=1", "progress=false", f"output={tmp_path / 'lm.json'}")
    assert proc.returncode == 0, proc.stderr
    gen = json.loads((tmp_path / "lm.json").read_text())["generation"]
    assert gen["forward_ppl"] is None and "gen.reference_lm" in gen["forward_note"]
    assert gen["probe_accuracy"] is None and gen["reverse_ppl"] > 1


@pytest.mark.slow
def test_evaluate_rejects_a_bad_generation_key(runs):
    root, _ = runs
    proc = run_eval(f"checkpoint={root / 'vae'}", "generation=true", "gen.samples=0")
    assert proc.returncode == 2 and "gen.samples" in proc.stderr


def test_batch_order_does_not_change_forward_ppl(runs):
    """The samples' order (and so their batches) leaves the exact NLL unchanged."""
    root, _ = runs
    lm, vocab, _ = load_model(root / "lm")
    samples = words(*make_sentences(17, 5))
    a = forward_ppl(lm, vocab, samples)["forward_ppl"]
    b = forward_ppl(lm, vocab, samples[::-1])["forward_ppl"]
    assert a == pytest.approx(b, rel=1e-9)


@pytest.mark.slow
def test_report_shows_the_generation_columns_and_the_quality_diversity_plot(corpus_dir, tmp_path):
    from vae_text.config import DataConfig
    from vae_text.generation.suite import generation_suite
    from vae_text.report import main, plot_quality_diversity, row_of

    sweep = tmp_path / "sweep"
    lm = tmp_path / "lm"
    train(compose_cfg(tiny_overrides(corpus_dir, "model=lm", "train.max_steps=6")), lm)
    cfg = GenerationConfig(samples=12, reverse_epochs=1, reference_lm=str(lm), probe_steps=20,
                           interpolation_pairs=2, neighbours=0)
    for beta in (0.3, 1.0):
        run = sweep / f"objective.kl_weight={beta}"
        train(compose_cfg(tiny_overrides(corpus_dir, f"objective.kl_weight={beta}",
                                         "train.max_steps=4", "eval.iw_samples=2")), run)
        model, vocab, _ = load_model(run)
        evaluation = json.loads((run / "eval_test.json").read_text())
        data = DataConfig(dir=str(corpus_dir), hub=None)
        evaluation["generation"] = generation_suite(model, vocab, data, "test", cfg)
        (run / "eval_test.json").write_text(json.dumps(evaluation))
    assert main([str(sweep), "--out", str(tmp_path / "rep")]) == 0
    header = next(line for line in (tmp_path / "rep.md").read_text().splitlines()
                  if line.startswith("| run |"))
    assert "| fwd PPL | rev PPL | dist-2 |" in header and "| len probe | interp Δ |" in header
    import csv

    rows = list(csv.DictReader((tmp_path / "rep.csv").open()))
    for r in rows:
        gen = json.loads((sweep / r["run"] / "eval_test.json").read_text())["generation"]
        for key in ("forward_ppl", "reverse_ppl", "distinct_2", "self_bleu", "probe_accuracy"):
            assert float(r[key]) == gen[key], key
    assert (tmp_path / "rep_quality_diversity.png").read_bytes()[:4] == b"\x89PNG"
    done = [row_of(sweep / r["run"], sweep) for r in rows]
    assert plot_quality_diversity(done, tmp_path / "q.png") == ["β=0.3", "β=1"]
    assert plot_quality_diversity([{**d, "forward_ppl": None} for d in done], tmp_path / "n.png") == []
    assert not (tmp_path / "n.png").exists()


def test_report_reads_the_generation_suite_of_an_evaluate_run(runs, tmp_path):
    """The user's path: train, then `evaluate ... generation=true` (eval_test_k<K>.json beside the
    run), then the report; a later quick look on a few sentences (_n<N>) is not taken."""
    import shutil

    from vae_text.evaluate import run as evaluate
    from vae_text.report import main

    root, _ = runs
    sweep = tmp_path / "sweep"
    shutil.copytree(root / "vae", sweep / "vae")
    gen = {"samples": 11, "reverse_epochs": 1, "reference_lm": str(root / "lm"), "probe_steps": 20,
           "interpolation_pairs": 2, "neighbours": 0}
    whole = evaluate({"checkpoint": str(sweep / "vae"), "iw_samples": 0, "progress": False,
                      "generation": True, "gen": gen})["generation"]
    look = evaluate({"checkpoint": str(sweep / "vae"), "iw_samples": 0, "progress": False,
                     "max_sentences": 5, "generation": True, "gen": {**gen, "seed": 3}})["generation"]
    assert (sweep / "vae" / "eval_test_k0.json").is_file() and (sweep / "vae" / "eval_test_k0_n5.json").is_file()
    assert look["reverse_ppl"] != whole["reverse_ppl"]
    assert main([str(sweep), "--out", str(tmp_path / "rep")]) == 0
    import csv

    (row,) = list(csv.DictReader((tmp_path / "rep.csv").open()))
    for key in ("forward_ppl", "reverse_ppl", "distinct_2", "self_bleu", "copy_rate", "probe_accuracy"):
        assert float(row[key]) == whole[key], key
    assert (tmp_path / "rep_quality_diversity.png").is_file()


@pytest.mark.slow
def test_generation_table_script_evaluates_each_run_once_and_reports(runs, tmp_path):
    import os
    import shutil

    root, _ = runs
    out = tmp_path / "out"
    for name, src in (("ptb", "vae"), ("ptb_lm", "lm")):
        shutil.copytree(root / src, out / name)
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
           "GEN_ARGS": "gen.samples=9 gen.reverse_epochs=1 gen.probe_steps=10 gen.interpolation_pairs=2 "
                       "gen.neighbours=0"}
    script = ["bash", str(ROOT / "scripts" / "generation_table.sh"), str(out), "ptb", "ptb_lm"]
    # the default reference LM, <out>/ptb_transformer_lm, is not there: one line says how to get one
    proc = subprocess.run(script, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "REFERENCE_LM" in proc.stderr and "ptb_transformer_lm" in proc.stderr
    assert not (out / "ptb" / "eval_test_k0.json").exists()
    env["REFERENCE_LM"] = str(out / "ptb_lm")
    proc = subprocess.run(script, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    gen = json.loads((out / "ptb" / "eval_test_k0.json").read_text())["generation"]
    assert gen["samples"] == 9 and gen["forward_ppl"] > 1 and gen["reference_lm"] == str(out / "ptb_lm")
    data_row = json.loads((out / "generation_data.json").read_text())["generation"]
    assert data_row["source"] == "data" and data_row["copy_rate"] == 1.0
    table = (out / "generation_report.md").read_text()
    assert f"| {gen['forward_ppl']:.1f} |" in table
    stamp = (out / "ptb" / "eval_test_k0.json").stat().st_mtime_ns
    assert subprocess.run(script, cwd=ROOT, env=env, capture_output=True, timeout=600).returncode == 0
    assert (out / "ptb" / "eval_test_k0.json").stat().st_mtime_ns == stamp  # not evaluated again
    missing = subprocess.run([*script[:3], "ptb_bn"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and "ptb_results.sh" in missing.stderr


def test_data_source_scores_real_training_sentences_in_place_of_samples(runs):
    """gen.source=data: the sample-side metrics on a seeded subset of the training sentences, the
    reference row for a model's samples; every one is a training sentence and no probe runs."""
    from vae_text.config import DataConfig
    from vae_text.data.text import read_split

    root, corpus = runs
    lm, vocab, _ = load_model(root / "lm")
    data = DataConfig(dir=str(corpus))
    train = read_split(data, "train")[0]
    cfg = GenerationConfig(samples=37, source="data", reverse_epochs=1, reference_lm=str(root / "lm"))
    gen = generation_suite(lm, vocab, data, "test", cfg)
    assert gen["source"] == "data" and gen["samples"] == 37 and gen["copy_rate"] == 1.0
    assert gen["probe_accuracy"] is None and "gen.source=data" in gen["latent_note"]
    subset = random.Random(0).sample(train, 37)
    assert gen["examples"] == [" ".join(s) for s in subset[:10]]
    assert gen["forward_ppl"] == pytest.approx(forward_ppl(lm, vocab, subset)["forward_ppl"], rel=1e-6)
    assert gen["distinct_2"] == distinct_n(subset, 2)
    everything = generation_suite(lm, vocab, data, "test", dataclasses.replace(cfg, samples=10**6))
    assert everything["samples"] == everything["reverse_samples"] == len(train) == 150  # at most the split
    with pytest.raises(ConfigError, match="gen.source"):
        GenerationConfig(source="train")
