"""Every option of every registered part is checked for type and range when the config is checked,
from the part's own declaration (the annotations of its `__init__`, vae_text.core.options): bad
values stop with one line naming the full key, a part of the user's own gets the checks without a
line of checking code, and every built-in option declares something the checker understands."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from typing import Annotated, Literal

import pytest
import torch

from conftest import ROOT, compose_cfg, tiny_overrides
from vae_text.config import ModelConfig
from vae_text.core.errors import ConfigError
from vae_text.core.options import Option, Range, declared
from vae_text.data.corpus import Vocab
from vae_text.model.encoders import ENCODERS, Encoder
from vae_text.model.latent import PRIORS, StandardNormal
from vae_text.model.textvae import build_model
from vae_text.remedies import REMEDIES, options
from vae_text.run.parts import NAMED, check_model, train_settings
from vae_text.train import train

BAD = [  # (overrides, the one line); NaN and infinities are refused as every config value is
    (["model/posterior=vmf", "model/prior=uniform_sphere", "model.posterior_args.kappa=high"],
     "model.posterior_args.kappa='high' is invalid: a number in (0, 10000]"),
    (["model/posterior=vmf", "model/prior=uniform_sphere", "model.posterior_args.kappa=1e300"],
     "model.posterior_args.kappa=1e+300 is invalid: a number in (0, 10000]"),
    (["model/posterior=vmf", "model/prior=uniform_sphere", "model.posterior_args.kappa=inf"],
     "model.posterior_args.kappa=inf is invalid: it must be a finite number"),
    (["model/posterior=iaf", "model.posterior_args.forget_bias=abc"],
     "model.posterior_args.forget_bias='abc' is invalid: a number in [-10, 10]"),
    (["model/posterior=iaf", "model.posterior_args.steps=2.5"],
     "model.posterior_args.steps=2.5 is invalid: an integer >= 1"),
    (["model/decoder=transformer", "model.decoder_args.ffn_size=-8"],
     "model.decoder_args.ffn_size=-8 is invalid: an integer >= 1, or null"),
    (["model/decoder=transformer", "model.decoder_args.ffn_size=0"],  # null is the 4x default
     "model.decoder_args.ffn_size=0 is invalid: an integer >= 1, or null"),
    (["model/decoder=transformer", "model.decoder_args.tie_embeddings=maybe"],
     "model.decoder_args.tie_embeddings='maybe' is invalid: true or false"),
    (["model/decoder=transformer", "model.decoder_args.tie_embeddings=1"],
     "model.decoder_args.tie_embeddings=1 is invalid: true or false"),
    (["model/encoder=transformer", "model.encoder_args.pool=cls"],
     "model.encoder_args.pool='cls' is invalid: one of ['mean', 'first']"),
    (["model/encoder=transformer", "model.encoder_args.dropout=nan"],
     "model.encoder_args.dropout=nan is invalid: it must be a finite number"),
    (["model/prior=mog", "model.prior_args.init_spread=1e300"],
     "model.prior_args.init_spread=1e+300 is invalid: a number in [0, 1000]"),
    (["objective=iwae", "objective.args.samples=true"],
     "objective.args.samples=True is invalid: an integer >= 1"),
    (["objective=infovae", "objective.args.kernel=laplace"],
     "objective.args.kernel='laplace' is invalid: one of ['rbf', 'imq']"),
    (["objective=capacity", "objective.args.gamma=1e300"],  # the loss would overflow float32
     "objective.args.gamma=1e+300 is invalid: a number in [0, 1e+06]"),
    (["objective=infovae", "objective.args.scale=1e300"],  # scale^2 would overflow
     "objective.args.scale=1e+300 is invalid: a number in (0, 1000]"),
    (["objective=mdr", "objective.args.rate=-inf"],
     "objective.args.rate=-inf is invalid: it must be a finite number"),
    (["+remedy.pretrain_epochs=two"], "remedy.pretrain_epochs='two' is invalid: an integer >= 0"),
    (["+remedy.aggressive=maybe"], "remedy.aggressive='maybe' is invalid: true or false"),
]


@pytest.mark.parametrize("overrides,line", BAD, ids=[line.split("=")[0] for _, line in BAD])
def test_a_bad_option_is_one_line_naming_its_key(corpus_dir, overrides, line):
    with pytest.raises(ConfigError) as err:
        train_settings(compose_cfg(tiny_overrides(corpus_dir, *overrides)))
    assert str(err.value) == line


def test_the_command_prints_the_one_line_and_writes_nothing(corpus_dir, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run([sys.executable, "-m", "vae_text.train",
                           *tiny_overrides(corpus_dir, "model/decoder=transformer",
                                           "model.decoder_args.tie_embeddings=maybe"),
                           f"hydra.run.dir={run}"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr == "error: model.decoder_args.tie_embeddings='maybe' is invalid: true or false\n"
    assert not run.exists()


def test_a_checkpoints_model_config_is_checked_too():
    cfg = ModelConfig(decoder="transformer", decoder_args={"ffn_size": 0})
    with pytest.raises(ConfigError, match=r"^model\.decoder_args\.ffn_size=0 is invalid"):
        check_model(cfg)


def test_good_values_pass_and_null_means_the_default(corpus_dir):
    settings = train_settings(compose_cfg(tiny_overrides(
        corpus_dir, "model/posterior=vmf", "model/prior=uniform_sphere", "model.posterior_args.kappa=50",
        "model/decoder=transformer", "model.decoder_args.heads=2", "model.decoder_args.ffn_size=24",
        "model.decoder_args.tie_embeddings=true", "objective=mdr", "objective.args.rate=3")))
    assert settings.model.posterior_args["kappa"] == 50  # an integer is a number
    vocab = Vocab(["<pad>", "<bos>", "<eos>", "<unk>", "a", "b", "c"])
    torch.manual_seed(0)
    model = build_model(ModelConfig(decoder="transformer", decoder_hidden=16,
                                    decoder_args={"heads": 2, "ffn_size": None}), vocab)
    assert model.decoder.blocks[0].mlp[0].out_features == 64  # null: 4 x model.decoder_hidden


# --- the declaration ---------------------------------------------------------------------------


def test_the_declaration_reads_types_choices_ranges_and_null():
    class Part:
        def __init__(self, size: int, *, a: Annotated[int, Range(ge=2, lt=9)] = 3,
                     b: Literal["x", "y"] = "x", c: Annotated[float, Range(gt=0)] | None = None,
                     d: bool = False, e: str = "s", f=1.5, g: list[int] | None = None):
            pass

    opts = declared(Part, skip=2)
    assert list(opts) == list("abcdefg")
    assert [o.allowed for o in list(opts.values())[:5]] == [
        "an integer in [2, 9)", "one of ['x', 'y']", "a number > 0, or null", "true or false", "a string"]
    assert opts["f"].kind is None and opts["g"].kind is None  # unannotated, or not understood: unchecked
    assert opts["f"].accepts("anything") and opts["g"].accepts([1])
    a, c = opts["a"], opts["c"]
    assert [a.accepts(v) for v in (2, 8, 9, 1, 2.0, True, "3")] == [True, True, False, False, False, False, False]
    assert [c.accepts(v) for v in (None, 1, 0.5, 0, -1.0, math.inf, math.nan, False)] == [
        True, True, True, False, False, False, False, False]
    assert not opts["d"].accepts(0) and not opts["e"].accepts(3) and not opts["b"].accepts("z")
    assert str(Range(le=1)) == "<= 1" and str(Range(ge=-10, le=10)) == "in [-10, 10]"
    assert Option("w", float).allowed == "a finite number"


def test_every_registered_option_declares_what_the_checker_understands():
    """A part added without annotations fails here: its options would go unchecked."""
    parts = [(n.args, name, n.options(cls)) for n in NAMED if n.args
             for name, cls in n.registry.items()]
    parts += [("remedy", name, options(cls)) for name, cls in REMEDIES.items()]
    assert {key for key, _, _ in parts} == {"model.decoder_args", "model.encoder_args",
                                           "model.posterior_args", "model.prior_args", "objective.args"} | {"remedy"}
    checked = 0
    for key, name, opts in parts:
        for option in opts.values():
            assert option.kind is not None, f"{key}.{option.name} of {name} has no annotation the checker reads"
            checked += 1
    assert checked >= 35


def test_every_default_passes_its_own_declaration():
    import inspect

    for n in [n for n in NAMED if n.args]:
        for name, cls in n.registry.items():
            params = inspect.signature(cls.__init__).parameters
            for option in n.options(cls).values():
                option.check(params[option.name].default, f"{n.args}.{option.name} ({name})")
    for cls in REMEDIES.values():
        params = inspect.signature(cls.__init__).parameters
        for option in options(cls).values():
            option.check(params[option.name].default, f"remedy.{option.name}")


class _WidePrior(StandardNormal):
    """A user's prior: declared options and nothing else, no checking code."""

    def __init__(self, latent_size: int, *, width: Annotated[float, Range(gt=0, le=5)] = 1.0,
                 shape: Literal["round", "flat"] = "round", note=None):
        super().__init__(latent_size)
        self.width, self.shape, self.note = width, shape, note


def test_a_users_part_gets_the_checks_for_free(corpus_dir, monkeypatch):
    monkeypatch.setitem(PRIORS, "wide", _WidePrior)
    base = tiny_overrides(corpus_dir, "model.prior=wide")
    for given, line in (("width=7", "model.prior_args.width=7 is invalid: a number in (0, 5]"),
                        ("width=wide", "model.prior_args.width='wide' is invalid: a number in (0, 5]"),
                        ("shape=cube", "model.prior_args.shape='cube' is invalid: one of ['round', 'flat']")):
        with pytest.raises(ConfigError) as err:
            train_settings(compose_cfg([*base, f"+model.prior_args.{given}"]))
        assert str(err.value) == line
    settings = train_settings(compose_cfg([*base, "+model.prior_args.width=2", "+model.prior_args.note=x"]))
    assert settings.model.prior_args == {"width": 2, "note": "x"}  # unannotated: passed on unchecked


# --- the VampPrior with a Transformer encoder --------------------------------------------------


def test_the_transformer_encoder_reads_embedded_inputs_as_its_tokens():
    cfg = ModelConfig(encoder_hidden=12, encoder="transformer")
    torch.manual_seed(0)
    encoder = ENCODERS["transformer"](9, cfg, 0, heads=3, pool="first").eval()
    tokens, lengths = torch.tensor([[4, 5, 6, 0], [7, 8, 0, 0]]), torch.tensor([3, 2])
    assert encoder.embed_size == 12
    torch.testing.assert_close(encoder.encode_embedded(encoder.embed(tokens), lengths),
                               encoder(tokens, lengths))


def test_the_vamp_prior_trains_with_the_transformer_encoder(corpus_dir, tmp_path):
    results = train(compose_cfg(tiny_overrides(
        corpus_dir, "model/prior=vamp", "model/encoder=transformer", "model.encoder_args.heads=2",
        "model.prior_args.components=3", "model.prior_args.length=5", "train.max_steps=3",
        "train.epochs=1", "eval.iw_samples=2")), tmp_path / "run")
    assert math.isfinite(results["test"]["kl"]) and math.isfinite(results["test"]["nll_iw"])


def test_the_vamp_prior_refuses_an_encoder_that_cannot_read_pseudo_inputs(corpus_dir, monkeypatch):
    class TokensOnly(Encoder):
        def __init__(self, vocab_size, cfg, pad_id):
            super().__init__()
            self.out_size = 3

        def forward(self, tokens, lengths):
            return tokens.new_zeros(len(tokens), 3, dtype=torch.float)

    monkeypatch.setitem(ENCODERS, "tokens_only", TokensOnly)
    with pytest.raises(ConfigError) as err:
        train_settings(compose_cfg(tiny_overrides(corpus_dir, "model/prior=vamp", "model.encoder=tokens_only")))
    assert str(err.value) == ("model.prior=vamp feeds pseudo-inputs to the encoder, which model.encoder="
                              "tokens_only cannot read (it has no encode_embedded): choose another prior or encoder")
