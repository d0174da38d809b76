"""The README's "Extending vae_text" examples, run from the README itself: each new prior,
posterior, decoder and remedy is registered, checked against an independent computation and
trained end to end, with no edit anywhere else in the package."""

from __future__ import annotations

import re

import pytest
import torch

from conftest import ROOT, compose_cfg, tiny_overrides
from vae_text import decoders, latent, remedies
from vae_text.config import TrainRunConfig
from vae_text.logger import SilentLogger
from vae_text.train import train
from vae_text.trainer import Trainer


def readme_examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Extending vae_text", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.fixture
def example():
    """Run the README's i-th example; the registries it writes to are restored afterwards."""
    saved = [(r, dict(r)) for r in (latent.PRIORS, latent.POSTERIORS, latent._KL,
                                    decoders.DECODERS, remedies.REMEDIES)]

    def run(i: int) -> dict:
        namespace: dict = {}
        exec(compile(readme_examples()[i], f"README.md example {i}", "exec"), namespace)
        return namespace

    yield run
    for registry, before in saved:
        registry.clear()
        registry.update(before)


def test_the_readme_has_the_four_examples():
    assert len(readme_examples()) == 4


def test_prior_example(example, corpus_dir, tmp_path):
    ns = example(0)
    prior = ns["ScaledNormal"](5, scale=2.0)
    torch.manual_seed(0)
    q = latent.DiagonalGaussian(torch.randn(7, 5), torch.randn(7, 5) * 0.3)
    closed = q.kl(prior).sum(-1)  # (B,)
    z = q.rsample((20_000,))  # (S, B, Z)
    mc = (q.log_prob(z) - prior.log_prob(z)).mean(0)
    assert torch.allclose(closed, mc, atol=0.05), (closed, mc)
    r = train(compose_cfg(tiny_overrides(corpus_dir, "model.prior=scaled_normal",
                                         "model.prior_args.scale=2.0")), tmp_path / "run")
    assert r["test"]["kl"] > 0 and r["test"]["nll_iw"] <= r["test"]["neg_elbo"] + 1.0


def test_posterior_example(example, corpus_dir, tmp_path):
    ns = example(1)
    head = ns["FixedVarianceHead"](9, 4, sigma=0.5)
    q = head(torch.randn(6, 9))
    z = q.rsample((5_000,))
    assert torch.allclose(z.var(0), torch.full((6, 4), 0.25), rtol=0.1)
    r = train(compose_cfg(tiny_overrides(corpus_dir, "model.posterior=fixed_variance",
                                         "model.posterior_args.sigma=0.5")), tmp_path / "run")
    assert "mi" in r["test"] and len(r["test"]["kl_per_dim"]) == 6


def test_decoder_example(example, corpus_dir, tmp_path):
    ns = example(2)
    dec = ns["BagOfWordsDecoder"](11, None, 3, 0)
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
    r = train(compose_cfg(tiny_overrides(corpus_dir, "model.decoder=bag_of_words")),
              tmp_path / "run")
    assert r["test"]["rec"] > 0 and r["test"]["recon_bleu"] >= 0


def test_remedy_example(example, corpus_dir, tmp_path):
    example(3)

    def trainer(epochs: int, run, resume=None) -> Trainer:
        extra = [f"train.epochs={epochs}"] + ([f"train.resume={resume}"] if resume else [])
        cfg = compose_cfg(tiny_overrides(corpus_dir, *extra))
        settings = TrainRunConfig.from_cfg(cfg)
        settings.remedy.freeze_encoder_after = 1  # the RemedyConfig field the README adds
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
