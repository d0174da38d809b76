"""Every tensor the model code makes follows the device of its inputs, checked without a GPU.

A CPU-only machine has no second device to mix up, so the test makes one: the model and its
inputs stay on the CPU while the *default* device is "meta" (`with torch.device("meta")`). A
tensor made without `device=` (torch.zeros, arange, full, randn, tensor, ...) then lands on meta,
and the first operation that mixes it with the model's CPU tensors raises, as a CPU tensor mixed
with CUDA ones raises on a GPU. Code that means the CPU (noise drawn from a CPU generator, then
moved to the device) says `device="cpu"`. tests/test_cuda.py runs the same paths on a real GPU.

Every registered family, prior, encoder and decoder goes through training (forward + backward),
the posterior's methods, generation by every decoding and the metrics' pieces.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import make_sentences
from vae_text.config import STRATEGIES, DecodeConfig, ModelConfig
from vae_text.core.errors import ConfigError
from vae_text.data.corpus import Vocab, collate, encode_split
from vae_text.metrics import (
    active_units,
    batch_elbo,
    iw_log_likelihood,
    mutual_information,
    token_hits,
)
from vae_text.model.decoders import DECODERS
from vae_text.model.decoding import decode
from vae_text.model.encoders import ENCODERS
from vae_text.model.latent import POSTERIORS, PRIORS, kl_term
from vae_text.model.latent.flow import MEAN_SAMPLES, IAFHead
from vae_text.model.textvae import build_model

SENTENCES = [s.split() for s in make_sentences(7, 3)]  # a batch of 7, vocabulary 4 + ~20 words
VOCAB = Vocab.build(SENTENCES)
# every dimension a different size: embed 10, encoder 14, latent 5, decoder 12 (Transformers: the
# widths, in 2 heads, with sinusoidal positions: the table made at run time)
SIZES = dict(embed_size=10, encoder_hidden=14, latent_size=5, decoder_hidden=12)


def _args(registry: dict, name: str) -> dict:
    return {"heads": 2, "positions": "sinusoidal"} if name == "transformer" else {}


def model_configs() -> list[tuple[str, ModelConfig]]:
    """Each posterior with each prior of its space (LSTMs), each encoder and decoder (Gaussian),
    and each decoder as a language model: read from the registries, so a new part is covered."""
    out = []
    for posterior in POSTERIORS:
        for prior in PRIORS:
            try:
                cfg = ModelConfig(**SIZES, posterior=posterior, prior=prior)
            except ConfigError:  # a prior of another space (the sphere's against R^Z)
                continue
            out.append((f"{posterior}-{prior}", cfg))
    for encoder in ENCODERS:
        for decoder in DECODERS:
            out.append((f"{encoder}-{decoder}", ModelConfig(
                **SIZES, encoder=encoder, decoder=decoder, encoder_args=_args(ENCODERS, encoder),
                decoder_args=_args(DECODERS, decoder))))
    for decoder in DECODERS:
        out.append((f"lm-{decoder}", ModelConfig(**SIZES, kind="lm", decoder=decoder,
                                                 decoder_args=_args(DECODERS, decoder))))
    return out


CONFIGS = model_configs()


def test_the_default_meta_device_catches_a_tensor_made_without_device():
    x = torch.ones(3)
    with torch.device("meta"):
        with pytest.raises(RuntimeError, match="meta"):
            x + torch.arange(3)
        y = x + torch.arange(3, device=x.device)
    assert torch.equal(y, torch.tensor([1.0, 2.0, 3.0]))


@pytest.mark.parametrize("name, cfg", CONFIGS, ids=[n for n, _ in CONFIGS])
def test_training_generation_and_metrics_make_no_tensor_off_their_inputs_device(name, cfg):
    torch.manual_seed(0)
    model = build_model(cfg, VOCAB)
    batch = collate(encode_split(SENTENCES, VOCAB), torch.arange(len(SENTENCES)))
    generator = torch.Generator().manual_seed(1)
    with torch.device("meta"):
        out = model(batch.tokens, batch.lengths, generator=generator)
        (out.rec.sum() + out.kl.sum()).backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        model.eval()
        z = None
        if model.has_latent:
            q = out.posterior
            z = q.rsample((2,), generator=generator)  # (2, 7, Z)
            assert q.log_prob(z).shape == (2, 7) and q.mean.shape == (7, cfg.latent_size)
            assert kl_term(q, model.prior, out.z).shape[0] == 7
            prior_z = model.prior.sample(4, generator=generator)
            assert model.prior.log_prob(prior_z).shape == (4,)
            z = q.mean.detach()
        for decoding in STRATEGIES:
            ids = decode(model, z, DecodeConfig(decoding, max_len=6), generator=generator,
                         batch_size=None if model.has_latent else 7)
            assert len(ids) == 7
        rec, kl, q = batch_elbo(model, batch, seed=2)
        assert rec.shape == (7,)
        if model.has_latent:
            iw = iw_log_likelihood(model, batch, samples=3, seed=2)
            assert iw.shape == (7,) and iw.dtype == torch.float64
            # the metrics gather posteriors on the CPU, in float64 for the MI
            mi = mutual_information(q.to("cpu"), q.rsample(generator=generator))
            au, variances = active_units(q.to("cpu").mean)
            assert mi == mi and len(variances) == cfg.latent_size
            assert 0 <= token_hits(model, batch, q.mean) <= int(batch.lengths.sum())
    assert grads and all(g.device.type == "cpu" for g in grads)


def test_iaf_posterior_off_its_flows_device_and_dtype_runs_the_flow_where_its_weights_are():
    # the metrics keep a split's posteriors on the CPU (float64 for the MI) while the flow stays
    # with the model: `mean` and `rsample` moved the encoder features into the flow's MADE as they
    # were, "Expected all tensors to be on the same device" on a GPU
    torch.manual_seed(0)
    head = IAFHead(9, 4, steps=2, hidden=11)
    q = head(torch.randn(6, 9))
    eps = torch.randn(3, 6, 4)
    with torch.no_grad():
        z32 = q.rsample(eps=eps)
    q64 = q.map(lambda t: t.detach().double())
    z64 = q64.rsample(eps=eps.double())
    assert z64.dtype == torch.float64 and torch.allclose(z64, z32.double(), atol=1e-6)
    assert torch.allclose(q64.log_prob(z64), q.log_prob(z32).double(), atol=1e-4)
    # `mean` averages the flow over fixed antithetic noise, drawn in the posterior's dtype
    noise = torch.randn(MEAN_SAMPLES, 1, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        expected = q.rsample(eps=torch.cat([noise, -noise]).float().expand(-1, 6, 4)).mean(0)
    assert torch.allclose(q64.mean, expected.double(), atol=1e-6)
    # the flow on another device (meta) than the posterior (CPU): its MADEs see only its device
    seen = []
    for made in head.flow.made:
        made.register_forward_pre_hook(lambda m, args: seen.append({a.device.type for a in args}))
    head.flow.to("meta")
    moved = dataclasses.replace(q, flow=head.flow)
    with pytest.raises(NotImplementedError, match="meta"):  # meta has no values to bring back
        moved.rsample(eps=eps)
    assert seen == [{"meta"}, {"meta"}]
