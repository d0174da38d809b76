"""The Transformer decoder and encoder (vae_text.model.attention*): causality, the key/value cache
against the full forward pass for every way z enters, independence from padding and batch, the
latent used or ignored, decoding strategies through the protocol, and options as config errors."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from vae_text.config import ModelConfig
from vae_text.core.errors import ConfigError, VaeTextError
from vae_text.data.corpus import Vocab
from vae_text.model.attention import sinusoid
from vae_text.model.decoders.transformer import TransformerDecoder
from vae_text.model.decoding import DecodeConfig, decode, greedy_decode
from vae_text.model.encoders.transformer import TransformerEncoder
from vae_text.model.textvae import build_model, decoder_inputs
from vae_text.run.parts import check_model

V = 19  # batch 4, embed 7, encoder 9 (3 heads), latent 5, d_model 12 (4 heads), vocabulary 19
VOCAB = Vocab(["<pad>", "<bos>", "<eos>", "<unk>"] + [f"w{i}" for i in range(V - 4)])
PAD, BOS, EOS = 0, 1, 2
SENTS = [[5, 6, 7, EOS], [8, EOS], [9, 10, 11, 12, 13, EOS], [14, 15, 16, EOS]]

# every injection of z, other position kinds, several memory slots, tied readout, the LM
MODES = [dict(inject="memory"), dict(inject="embedding"), dict(inject="both", memory_slots=3),
         dict(inject="both", positions="sinusoidal", tie_embeddings=True), dict(kind="lm")]
IDS = ["memory", "embedding", "both-3-slots", "sinusoidal-tied", "lm"]


def model(kind="vae", encoder="lstm", encoder_args=None, layers=2, **decoder_args):
    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, embed_size=7, encoder_hidden=9, latent_size=5, decoder_hidden=12,
                      decoder_layers=layers, decoder="transformer", encoder=encoder,
                      encoder_args=encoder_args or ({"heads": 3} if encoder == "transformer" else {}),
                      decoder_args=decoder_args)
    return build_model(check_model(cfg), VOCAB).eval()


def padded(sents, width=None):
    tokens = torch.full((len(sents), width or max(map(len, sents))), PAD)
    for i, s in enumerate(sents):
        tokens[i, : len(s)] = torch.tensor(s)
    return tokens


def code(kw, n=4, seed=1):
    return None if kw.get("kind") == "lm" else torch.randn(n, 5, generator=torch.Generator().manual_seed(seed))


def all_logits(m, inputs, z):
    """Logits (B, T, V) at every position, padding included."""
    return m.decoder(inputs, z, torch.ones_like(inputs, dtype=torch.bool)).view(*inputs.shape, V)


@pytest.mark.parametrize("kw", MODES, ids=IDS)
def test_changing_token_t_plus_1_never_changes_the_scores_up_to_t(kw):
    m = model(**kw)
    inputs = decoder_inputs(padded(SENTS), BOS, EOS, PAD)
    z = code(kw)
    with torch.no_grad():
        base = all_logits(m, inputs, z)
        for t in range(inputs.shape[1] - 1):
            changed = inputs.clone()
            changed[:, t + 1] = (changed[:, t + 1] + 3) % V
            out = all_logits(m, changed, z)
            torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], rtol=0, atol=1e-6)
            assert (out[:, t + 1] - base[:, t + 1]).abs().max() > 1e-3  # the change is seen at t+1


@pytest.mark.parametrize("kw", MODES, ids=IDS)
def test_cached_steps_give_the_log_probs_of_the_full_forward_pass(kw):
    m = model(**kw)
    tokens = padded(SENTS)
    z = code(kw)
    inputs = decoder_inputs(tokens, BOS, EOS, PAD)
    mask = tokens != PAD
    with torch.no_grad():
        full = m.decoder(inputs, z, mask).log_softmax(-1)  # (N, V)
        state, steps = m.decoder.start(z, 4), []
        for t in range(tokens.shape[1]):
            logits, state = m.decoder.step(inputs[:, t], state)
            steps.append(logits.log_softmax(-1))
    slots = 0 if z is None or kw["inject"] == "embedding" else kw.get("memory_slots", 1)
    assert state.keys[0].shape == (4, 4, slots + tokens.shape[1], 3)  # memory, then every token
    torch.testing.assert_close(torch.stack(steps, 1)[mask], full, rtol=1e-5, atol=1e-5)


def test_z_reaches_the_scores_by_each_injection():
    inputs = decoder_inputs(padded(SENTS), BOS, EOS, PAD)
    z = code({})
    for inject in ("memory", "embedding", "both"):
        m = model(inject=inject)
        with torch.no_grad():
            moved = (all_logits(m, inputs, z + 1) - all_logits(m, inputs, z)).abs()
        assert moved[:, 0].min() > 1e-4, inject  # from the first position on
    m = model(inject="memory")
    assert m.decoder.to_embedding is None and m.decoder.to_memory.out_features == 2 * 1 * 12


def test_a_step_feeds_only_the_new_token():
    """The dense layers' FLOPs of a step (what FlopCounterMode counts on CPU: not the attention
    over the cache, 2 (t + M) d per layer and head group) are the same at position 2 and 30, and a
    thirtieth of re-running the 31-token prefix."""
    torch.manual_seed(0)
    cfg = ModelConfig(latent_size=5, decoder_hidden=64, decoder="transformer", decoder_layers=1)
    m = build_model(cfg, VOCAB).eval()
    tokens = torch.tensor([5, 6, 7])

    def flops(fn):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            fn()
        return counter.get_total_flops()

    state, costs = m.decoder.start(code({}, 3), 3), {}
    with torch.no_grad():
        for t in range(31):
            if t in (2, 30):
                costs[t] = flops(lambda s=state: m.decoder.step(tokens, s))
            _, state = m.decoder.step(tokens, state)
    inputs = tokens[:, None].expand(3, 31)
    rerun = flops(lambda: m.decoder(inputs, code({}, 3), torch.ones_like(inputs, dtype=torch.bool)))
    assert costs[30] == costs[2] > 0
    assert 30 * costs[2] < rerun < 32 * costs[2]


@pytest.mark.parametrize("kw,encoder", [(MODES[2], "lstm"), (MODES[2], "transformer"),
                                        (dict(inject="memory", encoder_args={"heads": 1, "pool": "first"}),
                                         "transformer"), (MODES[4], "lstm")],
                         ids=["both-lstm", "both-transformer", "memory-transformer-first", "lm"])
def test_padding_and_batch_composition_never_change_a_score(kw, encoder):
    m = model(encoder=encoder, **kw)
    z = code(kw)
    with torch.no_grad():
        together = m.reconstruction(padded(SENTS, width=9), z)
        for i, s in enumerate(SENTS):
            alone = m.reconstruction(padded([s]), None if z is None else z[i : i + 1])
            torch.testing.assert_close(alone[0], together[i], rtol=1e-5, atol=1e-5)
        order = [2, 0, 3, 1]
        shuffled = m.reconstruction(padded([SENTS[i] for i in order]), None if z is None else z[order])
        torch.testing.assert_close(shuffled, together[order], rtol=1e-5, atol=1e-5)
        if kw.get("kind") != "lm":
            lengths = torch.tensor([len(s) for s in SENTS])
            mu = m.encode(padded(SENTS, width=9), lengths).mean
            for i, s in enumerate(SENTS):
                one = m.encode(padded([s]), lengths[i : i + 1]).mean
                torch.testing.assert_close(one[0], mu[i], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pool", ["mean", "first"])
def test_transformer_encoder_pools_the_real_tokens(pool):
    m = model(encoder="transformer", encoder_args={"heads": 3, "pool": pool, "positions": "sinusoidal"})
    enc = m.encoder
    assert isinstance(enc, TransformerEncoder) and enc.out_size == 9
    tokens = padded(SENTS[:1])  # one sentence, no padding: run the blocks by hand
    with torch.no_grad():
        x = enc.embed(tokens)
        if pool == "first":
            x = torch.cat([enc.first.weight[None], x], dim=1)
        x = x + sinusoid(torch.arange(x.shape[1]), 9)
        for block in enc.blocks:
            x, _ = block(x, None)
        x = enc.ln_out(x)[0]  # (T, 9)
        expected = x.mean(0) if pool == "mean" else x[0]
        torch.testing.assert_close(enc(tokens, torch.tensor([4]))[0], expected)
        # and the features follow the whole sentence: the last word moves them
        other = tokens.clone()
        other[0, 2] = 11
        assert (enc(other, torch.tensor([4])) - enc(tokens, torch.tensor([4]))).abs().max() > 1e-4


def test_sinusoid_matches_the_formula():
    pe = sinusoid(torch.arange(5), 6)
    i, pos = 1, 3  # dimensions 2i and 2i+1 at position 3
    angle = pos / 10000 ** (2 * i / 6)
    assert pe[pos, 2 * i].item() == pytest.approx(torch.tensor(angle).sin().item(), abs=1e-6)
    assert pe[pos, 2 * i + 1].item() == pytest.approx(torch.tensor(angle).cos().item(), abs=1e-6)
    assert sinusoid(torch.arange(2), 5).shape == (2, 5)  # odd widths too


@pytest.mark.parametrize("kw", [MODES[0], MODES[1], MODES[4]], ids=["memory", "embedding", "lm"])
def test_beam_of_one_is_greedy_and_strategies_run(kw):
    m = model(**kw)
    with torch.no_grad():
        m.decoder.readout.weight.mul_(8)  # peaked: the paths of the strategies differ
        m.decoder.readout.bias[PAD] = -1e4  # as trained: <pad> is never a target
    z = code(kw, n=6)
    size = None if z is not None else 3
    greedy = greedy_decode(m, z, max_len=20, batch_size=size)
    assert len({tuple(g) for g in greedy}) > 1 or z is None
    for alpha in (0.0, 1.0):
        assert decode(m, z, DecodeConfig("beam", beam_size=1, length_penalty=alpha, max_len=20),
                      batch_size=size) == greedy
    assert decode(m, z, DecodeConfig("top_k", top_k=1, max_len=20), torch.Generator().manual_seed(0),
                  batch_size=size) == greedy
    top_p = DecodeConfig("top_p", top_p=0.9, temperature=1.5, max_len=20)
    a = decode(m, z, top_p, torch.Generator().manual_seed(4), batch_size=size)
    assert a == decode(m, z, top_p, torch.Generator().manual_seed(4), batch_size=size)
    assert all(len(s) <= 20 for s in a)


def test_beam_search_finds_at_least_the_greedy_score():
    m = model(inject="both")
    with torch.no_grad():
        m.decoder.readout.weight.mul_(6)
    z = code({}, n=5)

    def logp(ids, c):
        return -m.reconstruction(torch.tensor([ids + [EOS]]), c[None]).item()

    greedy = greedy_decode(m, z, max_len=20)
    beam = decode(m, z, DecodeConfig("beam", beam_size=4, length_penalty=0, max_len=20))
    for g, b, c in zip(greedy, beam, z):
        assert logp(b, c) >= logp(g, c) - 1e-4


def test_reordering_the_state_equals_reordering_the_batch():
    m = model(inject="both", memory_slots=2)
    inputs = decoder_inputs(padded(SENTS), BOS, EOS, PAD)
    z = code({})
    rows = torch.tensor([2, 2, 0, 3, 1])  # beams are kept, dropped and duplicated
    with torch.no_grad():
        state = m.decoder.start(z, 4)
        for t in range(2):
            _, state = m.decoder.step(inputs[:, t], state)
        a, _ = m.decoder.step(inputs[rows, 2], m.decoder.reorder(state, rows))
        state = m.decoder.start(z[rows], 5)
        for t in range(3):
            b, state = m.decoder.step(inputs[rows, t], state)
    torch.testing.assert_close(a, b)


def test_tied_readout_is_the_embedding_stored_once():
    m = model(tie_embeddings=True)
    keys = list(m.decoder.state_dict())
    assert "readout.weight" not in keys and "readout.bias" in keys
    with torch.no_grad():
        m.decoder.embed.weight[7] += 1.0  # moving word 7's embedding moves its logit
        h = torch.randn(3, 12)
        expected = h @ m.decoder.embed.weight.T + m.decoder.readout.bias
        torch.testing.assert_close(m.decoder.readout(h), expected)


def test_learned_positions_past_max_len_are_a_clear_error():
    m = model(max_len=5)
    long = decoder_inputs(padded([[5, 6, 7, 8, 9, EOS]]), BOS, EOS, PAD)
    with pytest.raises(VaeTextError, match=r"longer than the 5 learned positions.*decoder_args\.max_len"):
        m.decoder(long, code({}, 1), long != PAD)


@pytest.mark.parametrize("args,key", [({"heads": 5}, "heads"), ({"inject": "prefix"}, "inject"),
                                      ({"positions": "rope"}, "positions"), ({"memory_slots": 0}, "memory_slots"),
                                      ({"dropout": 1.5}, "dropout"), ({"n_layer": 3}, "n_layer")])
def test_bad_decoder_options_are_one_line_config_errors(args, key):
    with pytest.raises(ConfigError, match=rf"model\.decoder_args\.{key}") as err:
        model(**args)
    assert "\n" not in str(err.value)


def test_bad_encoder_option_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model\.encoder_args\.pool='cls'"):
        model(encoder="transformer", encoder_args={"heads": 3, "pool": "cls"})
    assert TransformerDecoder.__init__.__kwdefaults__["inject"] == "both"
