"""docs/extending.md's examples, run as a user runs them: its Python blocks become a module of the
user's own (`my_lab/parts.py`) and its YAML `my_lab/conf/...`, in a folder
outside the checkout; the installed commands (the console scripts beside the interpreter running
the tests) train, evaluate and sample with them, named through `plugins=[my_lab.parts]` or an
installed entry point. Each part is also checked in-process against an independent computation."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_registries import shares_agree

from conftest import ROOT, TINY, compose_cfg, tiny_overrides, write_corpus
from vae_text import metrics, objectives, remedies
from vae_text.core.errors import ConfigError
from vae_text.model import decoders, encoders, latent
from vae_text.model.textvae import Output
from vae_text.run.logger import SilentLogger
from vae_text.run.parts import keyword_only, train_settings
from vae_text.run.trainer import Trainer


def readme_section() -> str:
    """The guide to extending (the README's section points to it)."""
    return (ROOT / "docs" / "extending.md").read_text()


def readme_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", readme_section(), flags=re.S)


def readme_yaml() -> dict[str, str]:
    """`my_lab/conf/<path>.yaml`: the block that follows that name in the section."""
    found = re.findall(r"`(my_lab/conf/[\w/]+\.yaml)`:\s*```yaml\n(.*?)```", readme_section(), re.S)
    return dict(found)


def write_lab(folder: Path) -> Path:
    """The user's package, written from the README: my_lab/parts.py and my_lab/conf/."""
    package = folder / "my_lab"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "parts.py").write_text("\n\n".join(readme_examples()))
    for path, text in readme_yaml().items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)
    (package / "conf" / "__init__.py").write_text("")  # pkg://my_lab.conf needs a package
    return folder


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    folder = write_lab(tmp_path_factory.mktemp("user") / "lab")
    write_corpus(folder.parent / "corpus")
    return folder


@pytest.fixture
def parts(lab):
    """The user's module imported in this process; the registries it writes to are restored and
    the module forgotten afterwards."""
    saved = [(r, dict(r)) for r in (latent.PRIORS, latent.POSTERIORS, latent._KL, decoders.DECODERS,
                                    encoders.ENCODERS, objectives.OBJECTIVES, remedies.REMEDIES,
                                    metrics.METRICS)]
    sys.path.insert(0, str(lab))
    try:
        yield importlib.import_module("my_lab.parts")
    finally:
        sys.path.remove(str(lab))
        for name in [m for m in sys.modules if m == "my_lab" or m.startswith("my_lab.")]:
            del sys.modules[name]
        for registry, before in saved:
            registry.clear()
            registry.update(before)


def command(name: str, *args: str, pythonpath: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    """An installed command (`vae-text-train`, ...) with `pythonpath` before the inherited one."""
    script = Path(sys.executable).parent / f"vae-text-{name}"
    assert script.is_file(), f"{script} is missing: install the package (pip install -e .)"
    inherited = os.environ.get("PYTHONPATH", "")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), *([inherited] if inherited else [])])
    return subprocess.run([str(script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def tiny(corpus: Path, run: Path) -> list[str]:
    return ["+experiment=smoke", f"data.dir={corpus}", f"data.cache_dir={corpus}/cache",
            "data.hub=null", *TINY, "train.epochs=1", "eval.iw_samples=3", f"hydra.run.dir={run}"]


def test_the_readme_has_the_examples():
    names = [re.search(r"^class (\w+)", ex, re.M).group(1) for ex in readme_examples()]
    assert names == ["ScaledNormal", "FixedVarianceHead", "MeanEmbeddingEncoder",
                     "BagOfWordsDecoder", "FixedBeta", "FreezeEncoder", "CollapsedShare"]
    assert list(readme_yaml()) == ["my_lab/conf/model/prior/scaled_normal.yaml",
                                   "my_lab/conf/objective/fixed_beta.yaml",
                                   "my_lab/conf/remedy/freeze_encoder.yaml"]
    assert "docs/extending.md" in (ROOT / "README.md").read_text().split("## Extending vae_text")[1]


# --- from the command line ---------------------------------------------------------------------


@pytest.mark.slow
def test_the_users_parts_train_evaluate_and_sample_from_the_installed_commands(lab, tmp_path):
    corpus, run = lab.parent / "corpus", tmp_path / "run"
    trained = command("train", *tiny(corpus, run), "plugins=[my_lab.parts]",
                      "hydra.searchpath=[pkg://my_lab.conf]", "model/prior=scaled_normal",
                      "model.posterior=fixed_variance", "model.posterior_args.sigma=0.5",
                      "model.encoder=mean_embedding", "model.decoder=bag_of_words",
                      "objective=fixed_beta", "+remedy=freeze_encoder",
                      "eval.metrics=[elbo,mi,au,iw_nll,reconstruction,collapsed]",
                      pythonpath=[lab], cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    saved = (run / "config.yaml").read_text()
    assert "prior: scaled_normal" in saved and "scale: 2.0" in saved  # from the user's YAML
    assert "name: fixed_beta" in saved and "freeze_encoder_after: 1" in saved
    assert "encoder: mean_embedding" in saved
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in h for h in history) and any("val/collapsed" in h for h in history)
    test = json.loads((run / "results.json").read_text())["test"]
    assert 0.0 <= test["collapsed"] <= 1.0
    assert test["kl"] > 0 and test["nll_iw"] <= test["neg_elbo"] + 1.0
    assert len(test["kl_per_dim"]) == 6  # the README's closed form splits over the dimensions
    # no plugins= here: the checkpoint's config names them
    evaluated = command("eval", f"checkpoint={run}", "iw_samples=3", "output=eval.json",
                        "metrics=[elbo,mi,au,iw_nll,collapsed]", pythonpath=[lab], cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    again = json.loads((tmp_path / "eval.json").read_text())
    assert again["sentences"] == 37 and again["kl"] == pytest.approx(test["kl"], rel=1e-4)
    assert again["collapsed"] == pytest.approx(test["collapsed"])  # the user's metric, by name
    sampled = command("sample", f"checkpoint={run}", "n=4", pythonpath=[lab], cwd=tmp_path)
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    assert len(sampled.stdout.strip().splitlines()) == 4
    # without the user's folder the run cannot be rebuilt, and says why in one line
    lost = command("sample", f"checkpoint={run}", "n=4", pythonpath=[], cwd=tmp_path)
    assert lost.returncode == 2 and lost.stderr.strip() == (
        "error: plugins: no module named 'my_lab.parts': install it, or put the folder that holds "
        "it on PYTHONPATH (the run was trained with plugins=['my_lab.parts'])")


@pytest.mark.slow
def test_an_installed_entry_point_names_the_parts_with_no_plugins_key(lab, tmp_path):
    """A distribution that declares `[vae_text.parts]` in its entry points (what pip writes into
    site-packages for `[project.entry-points."vae_text.parts"]`) is imported by every command."""
    corpus, site = lab.parent / "corpus", tmp_path / "site"
    args = [*tiny(corpus, tmp_path / "run"), "model.prior=scaled_normal", "model.prior_args.scale=2.0"]
    refused = command("train", *args, pythonpath=[site, lab], cwd=tmp_path)
    assert refused.returncode == 2 and "model.prior='scaled_normal' is unknown" in refused.stderr
    assert not (tmp_path / "run").exists()  # checked before Hydra makes the folder
    info = site / "my_lab-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my_lab\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[vae_text.parts]\nmy_lab = my_lab.parts\n")
    trained = command("train", *args, pythonpath=[site, lab], cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["test"]["kl"] > 0


@pytest.mark.slow
def test_a_plugin_that_is_not_there_is_one_line_before_any_folder(lab, tmp_path):
    result = command("train", *tiny(lab.parent / "corpus", tmp_path / "run"),
                     "plugins=[my_lab.partz]", pythonpath=[lab], cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip() == (
        "error: plugins: no module named 'my_lab.partz': install it, or put the folder that holds "
        "it on PYTHONPATH")
    assert not (tmp_path / "run").exists()


# --- each part against an independent computation ----------------------------------------------


def test_prior_example(parts, corpus_dir):
    prior = parts.ScaledNormal(5, scale=2.0)
    torch.manual_seed(0)
    q = latent.DiagonalGaussian(torch.randn(7, 5), torch.randn(7, 5) * 0.3)
    closed = q.kl(prior).sum(-1)  # (B,)
    z = q.rsample((20_000,))  # (S, B, Z)
    mc = (q.log_prob(z) - prior.log_prob(z)).mean(0)
    assert torch.allclose(closed, mc, atol=0.05), (closed, mc)
    assert latent.PRIORS["scaled_normal"] is parts.ScaledNormal
    assert {k: o.allowed for k, o in keyword_only(parts.ScaledNormal).items()} == {"scale": "a number > 0"}
    with pytest.raises(ConfigError) as err:  # its declaration is checked like a built-in's
        train_settings(compose_cfg(tiny_overrides(corpus_dir, "model.prior=scaled_normal",
                                                  "+model.prior_args.scale=-1")))
    assert str(err.value) == "model.prior_args.scale=-1 is invalid: a number > 0"


def test_posterior_example(parts):
    head = parts.FixedVarianceHead(9, 4, sigma=0.5)
    q = head(torch.randn(6, 9))
    z = q.rsample((5_000,))
    assert torch.allclose(z.var(0), torch.full((6, 4), 0.25), rtol=0.1)


def test_decoder_example(parts):
    dec = parts.BagOfWordsDecoder(11, None, 3, 0)
    z = torch.randn(2, 3)
    inputs = torch.tensor([[1, 5, 6, 0], [1, 7, 0, 0]])
    mask = inputs != 0
    full = dec(inputs, z, mask)
    state = dec.start(z, 2)
    stepped = []
    for t in range(inputs.shape[1]):
        logits, state = dec.step(inputs[:, t], state)
        stepped.append(logits)
    assert torch.equal(full, torch.stack(stepped, 1)[mask])
    assert torch.equal(dec.reorder(state, torch.tensor([1, 1, 0])), state[[1, 1, 0]])


def test_encoder_example(parts):
    from vae_text.config import ModelConfig

    enc = parts.MeanEmbeddingEncoder(13, ModelConfig(embed_size=5), 0)
    tokens = torch.tensor([[4, 5, 6, 0, 0], [7, 8, 0, 0, 0]])  # (B 2, T 5), padded with 0
    lengths = torch.tensor([3, 2])
    features = enc(tokens, lengths)
    assert features.shape == (2, 5) and enc.out_size == 5
    by_hand = enc.embed.weight[[4, 5, 6]].mean(0)
    assert torch.allclose(features[0], by_hand)
    # no dependence on the padding or the other sentences
    assert torch.allclose(enc(tokens[1:, :2], lengths[1:])[0], features[1])


def test_metric_example(parts, corpus_dir):
    from vae_text.metrics import METRICS
    from vae_text.metrics.base import BatchResult

    cls = METRICS["collapsed"]
    assert cls is parts.CollapsedShare
    metric = cls(None)
    for kl in (torch.tensor([[0.1, 0.2], [0.3, 0.4]]), torch.tensor([[0.0, 0.1], [2.0, 0.0], [0.2, 0.2]])):
        metric.update(BatchResult(batch=None, rec=torch.zeros(len(kl)), kl=kl, q=None))
    # KL totals 0.3, 0.7, 0.1, 2.0, 0.4: three of five below 0.5
    assert metric.finish(metric.state()) == {"collapsed": pytest.approx(3 / 5)}


def test_objective_example(parts):
    """B = 3 sentences, Z = 2, beta = 2: per sentence rec + 2 KL is 10 + 2 * 3 = 16,
    20 + 2 * 0.5 = 21 and 30 + 2 * 1 = 32, so the loss is 69 / 3 = 23; two processes holding
    rows {0, 1} and {2} contribute shares that sum to it."""
    objective = objectives.OBJECTIVES["fixed_beta"](None, beta=2.0)
    rec = torch.tensor([10.0, 20.0, 30.0])
    kl = torch.tensor([[1.0, 2.0], [0.25, 0.25], [0.5, 0.5]])  # totals 3, 0.5, 1

    def step(rows: slice):
        return objective(objectives.StepInput(out=Output(rec=rec[rows], kl=kl[rows]), prior=None,
                                              samples=1, batch_size=3, share=1.0, step=0,
                                              beta=1.0, reduce=lambda t: t))

    whole = step(slice(0, 3))
    assert whole.loss.item() == pytest.approx(23.0)
    assert {k: v.item() for k, v in whole.stats.items()} == pytest.approx(
        {"rec": 20.0, "kl": 1.5, "loss": 23.0})
    assert (step(slice(0, 2)).loss + step(slice(2, 3)).loss).item() == pytest.approx(23.0)
    assert {k: o.allowed for k, o in keyword_only(type(objective)).items()} == {"beta": "a number >= 0"}
    shares_agree(type(objective))  # the protocol every registered objective keeps


def test_remedy_example(parts, corpus_dir, tmp_path):
    def trainer(epochs: int, run, resume=None) -> Trainer:
        extra = [f"train.epochs={epochs}"] + ([f"train.resume={resume}"] if resume else [])
        cfg = compose_cfg(tiny_overrides(corpus_dir, *extra))
        settings = train_settings(cfg)
        settings.remedy.freeze_encoder_after = 1  # remedy.freeze_encoder_after=1, a user's key
        run.mkdir(parents=True, exist_ok=True)
        t = Trainer(cfg, settings, run)
        assert [r.name for r in t.remedies] == ["freeze_encoder"]
        t.fit(SilentLogger())
        return t

    first = trainer(1, tmp_path / "a")
    encoder = [p.detach().clone() for p in first.model.encoder_parameters()]
    decoder = [p.detach().clone() for p in first.model.decoder.parameters()]
    second = trainer(3, tmp_path / "a", resume=tmp_path / "a")
    assert second.state.epoch == 3
    assert all(torch.equal(a, b) for a, b in zip(encoder, second.model.encoder_parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(decoder, second.model.decoder.parameters()))


def test_a_plugin_that_fails_to_import_shows_its_own_error(tmp_path, monkeypatch):
    """A module that is there but imports something missing is the user's bug: its own error
    (and traceback) comes through, not "no module named" for the plugin."""
    from vae_text.core import plugins

    (tmp_path / "broken_lab.py").write_text("import no_such_dependency_xyz\n")
    (tmp_path / "plain_lab.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        plugins.load(["broken_lab"])
    with pytest.raises(ConfigError, match=r"^plugins: no module named 'plain_lab\.parts': "):
        plugins.load(["plain_lab.parts"])  # a module inside a plain module: not there
