import dataclasses

import pytest
import torch

from vae_text.config import ModelConfig
from vae_text.data.corpus import Vocab
from vae_text.model.encoders import LSTMEncoder as Encoder
from vae_text.model.textvae import build_model, decoder_inputs, word_dropout

PAD, BOS, EOS, UNK = 0, 1, 2, 3
V = 23  # vocabulary; batch 5, embed 7, encoder 9, latent 4, decoder 11: all different
VOCAB = Vocab(["<pad>", "<bos>", "<eos>", "<unk>"] + [f"w{i}" for i in range(V - 4)])


def cfg(**kw) -> ModelConfig:
    base = dict(embed_size=7, encoder_hidden=9, latent_size=4, decoder_hidden=11)
    return ModelConfig(**{**base, **kw})


def sentences(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = [3, 8, 5, 1, 6][:n]
    return [torch.randint(4, V, (k,), generator=g).tolist() + [EOS] for k in lengths]


def pad(sents):
    lengths = torch.tensor([len(s) for s in sents])
    tokens = torch.full((len(sents), int(lengths.max())), PAD)
    for i, s in enumerate(sents):
        tokens[i, : len(s)] = torch.tensor(s)
    return tokens, lengths


@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, False), (1, True), (3, True)])
def test_encoder_final_state_is_each_direction_at_its_true_end(layers, bidirectional):
    torch.manual_seed(0)
    enc = Encoder(V, cfg(encoder_layers=layers, bidirectional=bidirectional), PAD).eval()
    sents = sentences()
    tokens, lengths = pad(sents)
    got = enc(tokens, lengths)  # (B, dirs * H)
    assert got.shape == (5, 9 * (2 if bidirectional else 1))
    for i, s in enumerate(sents):  # each sentence alone, unpadded: outputs of the last layer
        out, _ = enc.lstm(enc.embed(torch.tensor([s])))  # (1, L, dirs * H)
        fwd_last = out[0, -1, :9]
        torch.testing.assert_close(got[i, :9], fwd_last)
        if bidirectional:  # the backward direction ends at the first word
            torch.testing.assert_close(got[i, 9:], out[0, 0, 9:])


def test_decoder_inputs_shift_and_drop_eos():
    tokens = torch.tensor([[5, 6, EOS], [7, EOS, PAD]])
    assert decoder_inputs(tokens, BOS, EOS, PAD).tolist() == [[BOS, 5, 6], [BOS, 7, PAD]]


def test_word_dropout_touches_only_decoder_words():
    torch.manual_seed(0)
    tokens, _ = pad([torch.randint(4, V, (40,)).tolist() + [EOS] for _ in range(30)][:29]
                    + [[5, EOS]])
    inputs = decoder_inputs(tokens, BOS, EOS, PAD)
    dropped = word_dropout(inputs, 0.5, UNK, (BOS, PAD), torch.Generator().manual_seed(1))
    assert dropped.dtype == inputs.dtype and dropped.shape == inputs.shape
    keep = (inputs == BOS) | (inputs == PAD)
    assert torch.equal(dropped[keep], inputs[keep])  # BOS and PAD never replaced
    changed = dropped != inputs
    assert torch.all(dropped[changed] == UNK)
    rate = changed.sum() / (~keep).sum()
    assert 0.4 < rate < 0.6
    assert torch.equal(word_dropout(inputs, 0.0, UNK, (BOS, PAD)), inputs)


def test_word_dropout_never_changes_targets_only_inputs():
    torch.manual_seed(0)
    model = build_model(cfg(word_dropout=0.99), VOCAB).train()
    tokens, lengths = pad(sentences())
    z = torch.randn(5, 4)
    before = tokens.clone()
    model.reconstruction(tokens, z)
    assert torch.equal(tokens, before)


@pytest.mark.parametrize("conditioning", ["init", "concat", "both"])
def test_sentence_loss_does_not_depend_on_batch_or_padding(conditioning):
    torch.manual_seed(0)
    model = build_model(cfg(conditioning=conditioning, decoder_layers=2), VOCAB).eval()
    sents = sentences()
    tokens, lengths = pad(sents)
    z = torch.randn(5, 4)
    together = model.reconstruction(tokens, z)
    q = model.encode(tokens, lengths)
    mu, logvar = q.mu, q.logvar
    for i, s in enumerate(sents):
        alone_tokens, alone_lengths = pad([s])
        extra = torch.cat([alone_tokens, torch.full((1, 9), PAD)], 1)  # more padding
        for t in (alone_tokens, extra):
            torch.testing.assert_close(model.reconstruction(t, z[i : i + 1])[0], together[i])
        alone = model.encode(alone_tokens, alone_lengths)
        torch.testing.assert_close(alone.mu[0], mu[i])
        torch.testing.assert_close(alone.logvar[0], logvar[i])


@pytest.mark.parametrize("encoder_layers,bidirectional", [(2, False), (1, True)])
def test_sentence_gradients_do_not_depend_on_batch_or_padding(encoder_layers, bidirectional):
    # training mode (dropout off, so nothing random but eps): the gradient of one sentence's
    # rec + KL is the same in a padded batch as alone with extra padding, through the encoder
    # that reads its last real position and through sentence_nll's own backward
    torch.manual_seed(0)
    model = build_model(cfg(encoder_layers=encoder_layers, bidirectional=bidirectional,
                            decoder_layers=2), VOCAB).train()
    sents = sentences()
    tokens, lengths = pad(sents)
    eps = torch.randn(5, 4)

    def grads(t, n, e, row):
        model.zero_grad()
        out = model(t, n, eps=e)
        (out.rec[row] + out.kl[row].sum()).backward()
        return [p.grad.clone() for p in model.parameters()]

    for i, s in enumerate(sents):
        alone, alone_len = pad([s])
        alone = torch.cat([alone, torch.full((1, 6), PAD)], 1)  # more padding than the batch has
        for got, want in zip(grads(tokens, lengths, eps, i), grads(alone, alone_len, eps[i:i + 1], 0),
                             strict=True):
            torch.testing.assert_close(got, want)


def test_reconstruction_is_the_sum_of_token_nll():
    torch.manual_seed(0)
    model = build_model(cfg(), VOCAB).eval()
    s = sentences(1)[0]
    tokens, _ = pad([s])
    z = torch.randn(1, 4)
    h, _ = model.decoder.hidden_states(decoder_inputs(tokens, BOS, EOS, PAD), z)
    logp = model.decoder.logits(h).log_softmax(-1)[0]  # (T, V)
    expected = -sum(logp[t, s[t]] for t in range(len(s)))  # words and <eos>, no <bos>
    torch.testing.assert_close(model.reconstruction(tokens, z)[0], expected)


def test_decoder_is_causal_and_conditioned_on_z():
    torch.manual_seed(0)
    model = build_model(cfg(), VOCAB).eval()
    tokens, _ = pad([[5, 6, 7, 8, EOS]])
    z = torch.randn(1, 4)
    inputs = decoder_inputs(tokens, BOS, EOS, PAD)
    h, _ = model.decoder.hidden_states(inputs, z)
    changed = inputs.clone()
    changed[0, 3] = 9
    h2, _ = model.decoder.hidden_states(changed, z)
    torch.testing.assert_close(h[0, :3], h2[0, :3])  # the past never sees the future
    assert not torch.allclose(h[0, 3:], h2[0, 3:])
    h3, _ = model.decoder.hidden_states(inputs, z + 1)
    assert not torch.allclose(h[0, 0], h3[0, 0])  # z reaches the very first prediction


@pytest.mark.parametrize("conditioning,concat_in,has_init", [
    ("init", 7, True), ("concat", 7 + 4, False), ("both", 7 + 4, True)])
def test_conditioning_modes(conditioning, concat_in, has_init):
    model = build_model(cfg(conditioning=conditioning), VOCAB)
    assert model.decoder.lstm.input_size == concat_in
    assert (model.decoder.init_state is not None) == has_init
    assert model.decoder.lstm.bidirectional is False


def test_kl_per_dimension_and_sampling_switch():
    torch.manual_seed(0)
    tokens, lengths = pad(sentences())
    vae = build_model(cfg(), VOCAB).eval()
    out = vae(tokens, lengths)
    assert out.kl.shape == (5, 4) and torch.all(out.kl >= 0)
    ae = build_model(cfg(sample_z=False), VOCAB).eval()
    a, b = ae(tokens, lengths), ae(tokens, lengths)
    torch.testing.assert_close(a.rec, b.rec)  # z = mu: deterministic
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    torch.testing.assert_close(vae(tokens, lengths, g1).rec, vae(tokens, lengths, g2).rec)


def test_language_model_has_no_latent():
    model = build_model(cfg(kind="lm"), VOCAB)
    assert not hasattr(model, "encoder") and model.decoder.init_state is None
    assert model.decoder.lstm.input_size == 7
    tokens, lengths = pad(sentences())
    out = model(tokens, lengths)
    assert out.kl.shape == (5, 0) and out.rec.shape == (5,)


def test_tiny_model_overfits_a_tiny_corpus():
    torch.manual_seed(0)
    sents = [s for s in sentences(5, seed=3)]
    tokens, lengths = pad(sents)
    model = build_model(cfg(embed_size=16, encoder_hidden=32, decoder_hidden=32), VOCAB)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(300):
        out = model(tokens, lengths)
        loss = out.rec.mean() + 0.1 * out.kl.sum(-1).mean()  # a beta-VAE can afford the bits
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    model.eval()
    rec = model.reconstruction(tokens, model.encode(tokens, lengths).mean)
    assert first > 10 and rec.max().item() < 0.5  # every sentence almost surely reproduced


def test_model_config_rejects_bad_values():
    from vae_text.core.errors import ConfigError

    with pytest.raises(ConfigError, match="model.latent_size=0"):
        cfg(latent_size=0)
    with pytest.raises(ConfigError, match="model.conditioning"):
        cfg(conditioning="sideways")
    with pytest.raises(ConfigError, match="model.word_dropout"):
        cfg(word_dropout=1.5)
    assert dataclasses.asdict(cfg())["decoder_hidden"] == 11
