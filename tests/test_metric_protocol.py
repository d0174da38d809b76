"""The metric protocol (vae_text.metrics.base): every registered metric merges its state by name
across processes into the numbers of one process over the whole split; metrics are selected by
name, also a user's own; rec at z = mean against its definition."""

import importlib
import math
import textwrap

import pytest
import torch
from torch import Tensor

from conftest import compose_cfg, tiny_overrides
from vae_text.config import ModelConfig
from vae_text.core.errors import ConfigError
from vae_text.data.batches import batch_plan, iterate
from vae_text.data.corpus import BOS, EOS, PAD, UNK, Vocab, collate, encode_split
from vae_text.evaluate import format_table
from vae_text.metrics import (
    METRICS,
    BatchResult,
    EvalConfig,
    EvalContext,
    Metric,
    batch_elbo,
    evaluate,
    reduce_states,
)
from vae_text.model.textvae import build_model

WORDS = ["a", "b", "c", "d"]  # vocabulary 4 specials + 4 = 8
SENTENCES = [[WORDS[(3 * i + j) % 4] for j in range(1 + i % 5)] for i in range(13)]  # batches 4, 4, 4, 1


def small(kind="vae", sample_z=True):
    torch.manual_seed(0)
    vocab = Vocab([PAD, BOS, EOS, UNK, *WORDS])
    cfg = ModelConfig(kind=kind, embed_size=5, encoder_hidden=9, latent_size=3, decoder_hidden=7,
                      sample_z=sample_z)
    return build_model(cfg, vocab).eval(), vocab, encode_split(SENTENCES, vocab)


def same(a, b, key):
    if isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), key
    elif isinstance(a, list):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), key
    else:
        assert a == b, key


@pytest.mark.parametrize("name", sorted(METRICS))
def test_each_metric_merged_from_two_processes_equals_one_process_and_the_suite(name):
    model, vocab, split = small()
    cfg = EvalConfig(iw_samples=4, batch_size=4, progress=False, metrics=tuple({"elbo": 0, name: 0}))
    ctx = EvalContext(model, split, cfg, vocab)
    cls = METRICS[name]
    assert cls.applies(ctx)
    results = [BatchResult(b, *batch_elbo(model, b, cfg.seed))
               for b in iterate(split, batch_plan(split, cfg.batch_size, shuffle=False))]
    whole, rank0, rank1 = cls(ctx), cls(ctx), cls(ctx)
    for i, result in enumerate(results):  # rank r takes every second batch from r, as evaluate does
        whole.update(result)
        (rank0, rank1)[i % 2].update(result)
    state = whole.state()
    assert state and all(isinstance(v, (list, Tensor, int, float)) for v in state.values())
    one = whole.finish(reduce_states([state]))
    two = cls(ctx).finish(reduce_states([rank0.state(), rank1.state()]))
    assert one.keys() == two.keys() and {r.key for r in cls.rows} & one.keys()
    for key in one:
        same(two[key], one[key], key)
    suite = evaluate(model, split, vocab, cfg)  # the suite with this metric and elbo (always there)
    elbo = {"rec", "kl", "neg_elbo", "ppl_elbo", "kl_per_dim"}
    timings = {"seconds"} | ({"readout_gflops", "matmul_bound_gflops"} if name == "iw_nll" else set())
    assert set(suite) == set(one) | elbo | {"sentences", "tokens", "model_tokens"} | timings
    for key in one:
        same(suite[key], one[key], key)


def test_reduce_states_adds_numbers_and_concatenates_lists_by_name():
    a = {"sum": torch.tensor([1.0, 2.0], dtype=torch.float64), "count": 3, "items": ["x"]}
    b = {"items": ["y", "z"], "count": 4, "sum": torch.tensor([0.5, 0.25], dtype=torch.float64)}
    merged = reduce_states([a, b])
    assert merged["count"] == 7 and merged["items"] == ["x", "y", "z"]
    assert merged["sum"].tolist() == [1.5, 2.25]


def test_which_metrics_apply_to_a_language_model_and_an_autoencoder():
    for kind, sample_z, expected in (("lm", True, ["elbo"]),
                                     ("vae", False, sorted(set(METRICS) - {"iw_nll"}))):
        model, vocab, split = small(kind, sample_z)
        ctx = EvalContext(model, split, EvalConfig(progress=False), vocab)
        assert sorted(n for n, cls in METRICS.items() if cls.applies(ctx)) == expected, kind


def test_rec_at_the_posterior_mean_against_its_definition():
    model, vocab, split = small()
    out = evaluate(model, split, vocab, EvalConfig(iw_samples=0, batch_size=4, progress=False,
                                                   metrics=("elbo", "rec_mean")))
    whole = collate(split, torch.arange(len(split)))  # one batch, not the suite's four
    with torch.no_grad():
        mean = model.encode(whole.tokens, whole.lengths).mean
        expected = model.reconstruction(whole.tokens, mean).double().mean().item()
    assert out["rec_mean"] == pytest.approx(expected, rel=1e-5)
    assert out["rec_mean"] != pytest.approx(out["rec"], rel=1e-4)  # rec is at a sampled z
    assert "| rec at z = mean (nats/sentence) |" in format_table(out, "t")
    # a deterministic code decodes its mean: rec is rec at the mean
    model, vocab, split = small(sample_z=False)
    out = evaluate(model, split, vocab, EvalConfig(batch_size=4, progress=False,
                                                   metrics=("elbo", "rec_mean")))
    assert out["rec_mean"] == pytest.approx(out["rec"], rel=1e-6)


PLUGIN = '''
    import torch
    from vae_text.metrics import Metric, Row, register

    @register
    class MeanLength(Metric):
        """Words per sentence: nothing of the model, so its value is known by hand."""
        name = "mean_length"
        rows = (Row("mean_length", "words per sentence", ".3f", ("len", ".1f")),)

        def __init__(self, ctx):
            super().__init__(ctx)
            self.words = 0

        def update(self, result):
            self.words += int(result.batch.lengths.sum()) - len(result.batch)  # less each <eos>

        def state(self):
            return {"words": self.words}

        def finish(self, state):
            return {"mean_length": state["words"] / len(self.ctx.split)}
'''


def test_a_metric_of_the_users_own_module_is_selected_by_name(tmp_path, monkeypatch):
    (tmp_path / "my_metrics.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(METRICS, "mean_length", None)  # so that the entry is gone after the test
    importlib.import_module("my_metrics")  # what a plugin import does: its @register runs
    assert issubclass(METRICS["mean_length"], Metric)
    model, vocab, split = small()
    out = evaluate(model, split, vocab, EvalConfig(iw_samples=0, progress=False,
                                                   metrics=("elbo", "mean_length")))
    assert out["mean_length"] == pytest.approx(sum(map(len, SENTENCES)) / 13)
    assert "mi" not in out and math.isfinite(out["rec"])  # only what eval.metrics names
    assert f"| words per sentence | {out['mean_length']:.3f} |" in format_table(out, "t")


def test_an_unknown_metric_name_is_one_line_naming_the_key(corpus_dir, tmp_path):
    model, vocab, split = small()
    with pytest.raises(ConfigError) as err:
        evaluate(model, split, vocab, EvalConfig(progress=False, metrics=("elbo", "rec_at_mu")))
    message = str(err.value)
    assert "\n" not in message and "eval.metrics='rec_at_mu' is unknown" in message
    assert "rec_mean" in message  # the names to choose from
    with pytest.raises(ConfigError, match="eval.metrics=.* is invalid"):
        EvalConfig(metrics=("elbo", "elbo"))
    with pytest.raises(ConfigError, match="eval.metrics=.* lacks elbo"):
        EvalConfig(metrics=("mi",))
    # training refuses it at start-up, before any data is read or folder made
    with pytest.raises(ConfigError, match="eval.metrics='nope' is unknown"):
        from vae_text.train import train

        train(compose_cfg(tiny_overrides(corpus_dir, "eval.metrics=[elbo,nope]")), tmp_path / "run")
    assert not (tmp_path / "run").exists()
