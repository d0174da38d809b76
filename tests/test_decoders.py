"""The decoder and encoder protocols (vae_text.model.decoders, vae_text.model.encoders): step-by-step
generation equals the full forward pass, reordering the state equals reordering the batch, and a
decoder from outside the package trains, is evaluated and decodes with no edit elsewhere."""

import math

import pytest
import torch
from torch import Tensor, nn

from conftest import compose_cfg, tiny_overrides
from vae_text.config import ModelConfig
from vae_text.core.errors import ConfigError
from vae_text.data.corpus import Vocab
from vae_text.model.decoders import DECODERS, Decoder, LSTMDecoder
from vae_text.model.decoding import DecodeConfig, decode, greedy_decode
from vae_text.model.encoders import ENCODERS, Encoder, LSTMEncoder
from vae_text.model.textvae import build_model, decoder_inputs
from vae_text.run.parts import check_model
from vae_text.train import train

V = 19  # batch 4, embed 7, encoder 9, latent 5, decoder 11, vocabulary 19
VOCAB = Vocab(["<pad>", "<bos>", "<eos>", "<unk>"] + [f"w{i}" for i in range(V - 4)])
PAD, BOS, EOS = 0, 1, 2


def model(**kw):
    torch.manual_seed(0)
    m = build_model(ModelConfig(embed_size=7, encoder_hidden=9, latent_size=5, decoder_hidden=11, **kw), VOCAB)
    return m.eval()


def batch():
    sents = [[5, 6, 7, EOS], [8, EOS], [9, 10, 11, 12, 13, EOS], [14, 15, EOS]]
    tokens = torch.full((4, 6), PAD)
    for i, s in enumerate(sents):
        tokens[i, : len(s)] = torch.tensor(s)
    return tokens


def test_registries_hold_the_lstm_parts():
    assert DECODERS["lstm"] is LSTMDecoder and issubclass(LSTMDecoder, Decoder)
    assert ENCODERS["lstm"] is LSTMEncoder and issubclass(LSTMEncoder, Encoder)
    m = model()
    assert isinstance(m.decoder, Decoder) and m.decoder.vocab_size == V
    assert m.encoder.out_size == 9


@pytest.mark.parametrize("kw", [dict(conditioning="init"), dict(conditioning="concat"),
                                dict(conditioning="both", decoder_layers=2), dict(kind="lm")])
def test_cached_steps_give_the_log_probs_of_the_full_forward_pass(kw):
    m = model(**kw)
    tokens = batch()
    z = None if kw.get("kind") == "lm" else torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    inputs = decoder_inputs(tokens, BOS, EOS, PAD)
    mask = tokens != PAD
    with torch.no_grad():
        full = m.decoder(inputs, z, mask).log_softmax(-1)  # (N, V), row-major over real positions
        state, steps = m.decoder.start(z, 4), []
        for t in range(tokens.shape[1]):
            logits, state = m.decoder.step(inputs[:, t], state)
            steps.append(logits.log_softmax(-1))
    stepped = torch.stack(steps, 1)[mask]  # (N, V)
    torch.testing.assert_close(stepped, full, rtol=1e-5, atol=1e-5)
    # and the sentence NLL is the sum of the targets' log-probs
    rows = torch.arange(4)[:, None].expand_as(tokens)[mask]
    nll = torch.zeros(4).index_add_(0, rows, -full.gather(1, tokens[mask][:, None])[:, 0])
    torch.testing.assert_close(m.reconstruction(tokens, z), nll, rtol=1e-5, atol=1e-5)


def test_reordering_the_state_equals_reordering_the_batch():
    m = model()
    inputs = decoder_inputs(batch(), BOS, EOS, PAD)
    z = torch.randn(4, 5, generator=torch.Generator().manual_seed(2))
    rows = torch.tensor([2, 2, 0, 3, 1])  # beams are kept, dropped and duplicated
    with torch.no_grad():
        state = m.decoder.start(z, 4)
        for t in range(2):
            _, state = m.decoder.step(inputs[:, t], state)
        state = m.decoder.reorder(state, rows)
        a, _ = m.decoder.step(inputs[rows, 2], state)
        state = m.decoder.start(z[rows], 5)
        for t in range(3):
            b, state = m.decoder.step(inputs[rows, t], state)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kw", [dict(conditioning="concat"), dict(kind="lm")])
def test_beam_of_one_is_greedy_through_the_protocol(kw):
    m = model(**kw)
    with torch.no_grad():
        m.decoder.proj.weight.mul_(8)  # peaked: the paths of the strategies differ
    z = None if kw.get("kind") == "lm" else torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    size = None if z is not None else 3
    greedy = greedy_decode(m, z, max_len=20, batch_size=size)
    assert decode(m, z, DecodeConfig("beam", beam_size=1, max_len=20), batch_size=size) == greedy
    assert decode(m, z, DecodeConfig("top_k", top_k=1, max_len=20), torch.Generator().manual_seed(0),
                  batch_size=size) == greedy


@pytest.mark.parametrize("kw,key", [(dict(decoder="mamba"), "model.decoder"),
                                    (dict(encoder="gru"), "model.encoder"),
                                    (dict(decoder_args={"heads": 4}), "model.decoder_args.heads"),
                                    (dict(encoder_args={"pool": "mean"}), "model.encoder_args.pool")])
def test_unknown_parts_are_config_errors_naming_the_key(kw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_model(ModelConfig(**kw))  # names are checked where the registries are


class _Bigram(Decoder):
    """A decoder vae_text does not ship: logits from the previous token and z alone."""

    def __init__(self, vocab_size, cfg, latent_size, pad_id, *, width: int = 8):
        super().__init__()
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, width, padding_idx=pad_id)
        self.from_z = nn.Linear(latent_size, width) if latent_size else None
        self.out = nn.Linear(width, vocab_size)

    def _bias(self, z: Tensor | None, batch: int) -> Tensor:
        return self.from_z(z) if self.from_z is not None else self.embed.weight.new_zeros(batch, 1)

    def forward(self, inputs, z, mask):
        h = torch.tanh(self.embed(inputs) + self._bias(z, len(inputs))[:, None])  # (B, T, W)
        return self.out(h[mask])

    def start(self, z, batch_size):
        return self._bias(z, batch_size)

    def step(self, tokens, state):
        return self.out(torch.tanh(self.embed(tokens) + state)), state

    def reorder(self, state, rows):
        return state[rows]


def test_a_decoder_registered_from_outside_trains_evaluates_and_decodes(corpus_dir, tmp_path, monkeypatch):
    from vae_text.pipeline import TextVAEPipeline

    monkeypatch.setitem(DECODERS, "bigram", _Bigram)
    results = train(compose_cfg(tiny_overrides(corpus_dir, "model.decoder=bigram", "+model.decoder_args.width=10",
                                               "train.epochs=1", "eval.iw_samples=3")), tmp_path / "run")
    test = results["test"]
    assert len(test["kl_per_dim"]) == 6 and math.isfinite(test["nll_iw"])
    assert 0 <= test["token_accuracy"] <= 1 and "recon_bleu" in test
    vae = TextVAEPipeline.from_pretrained(tmp_path / "run", device="cpu")
    assert isinstance(vae.model.decoder, _Bigram) and vae.model.decoder.embed.embedding_dim == 10
    for strategy in ("greedy", "beam", "top_p"):
        assert len(vae.sample(3, strategy, seed=0, max_len=12)) == 3


def test_state_dict_keys_are_those_of_checkpoints_written_before_the_registries():
    m = model(bn_gamma=0.6, decoder_layers=2)
    lstm = lambda prefix, layers: [f"{prefix}.lstm.{w}_l{i}" for i in range(layers)  # noqa: E731
                                   for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert list(m.state_dict()) == [
        "encoder.embed.weight", *lstm("encoder", 1), "head.linear.weight", "head.linear.bias",
        "head.mu_bn.weight", "head.mu_bn.bias", "head.mu_bn.running_mean", "head.mu_bn.running_var",
        "head.mu_bn.num_batches_tracked", "decoder.embed.weight", *lstm("decoder", 2),
        "decoder.init_state.weight", "decoder.init_state.bias", "decoder.proj.weight", "decoder.proj.bias"]
