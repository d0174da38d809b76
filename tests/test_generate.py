import pytest
import torch

from vae_text.config import ModelConfig
from vae_text.data.corpus import Vocab
from vae_text.model.decoding import DecodeConfig, decode, filter_logits, greedy_decode
from vae_text.model.textvae import build_model

V = 17  # batch 6, embed 7, encoder 9, latent 5, decoder 11
VOCAB = Vocab(["<pad>", "<bos>", "<eos>", "<unk>"] + [f"w{i}" for i in range(V - 4)])


def model(**kw):
    torch.manual_seed(0)
    m = build_model(ModelConfig(embed_size=7, encoder_hidden=9, latent_size=5, decoder_hidden=11, **kw), VOCAB)
    with torch.no_grad():  # a peaked output layer: decoding paths differ between strategies
        m.decoder.proj.weight.mul_(8)
    return m.eval()


def z(n=6, seed=1):
    return torch.randn(n, 5, generator=torch.Generator().manual_seed(seed))


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    kept = lambda out: (out > float("-inf")).int().tolist()[0]  # noqa: E731
    assert kept(filter_logits(logits, top_k=2)) == [1, 1, 0, 0, 0]
    assert kept(filter_logits(logits, top_p=0.5)) == [1, 0, 0, 0, 0]
    assert kept(filter_logits(logits, top_p=0.6)) == [1, 1, 0, 0, 0]
    assert kept(filter_logits(logits, top_p=0.86)) == [1, 1, 1, 1, 0]
    shuffled = logits[:, [3, 0, 4, 1, 2]]  # the filter follows values, not positions
    assert kept(filter_logits(shuffled, top_p=0.6)) == [0, 1, 0, 1, 0]


def test_degenerate_settings_equal_greedy():
    m, codes = model(), z()
    greedy = greedy_decode(m, codes, max_len=30)
    for alpha in (0.0, 1.0):
        assert decode(m, codes, DecodeConfig("beam", beam_size=1, length_penalty=alpha, max_len=30)) == greedy
    assert decode(m, codes, DecodeConfig("top_k", top_k=1, max_len=30),
                  torch.Generator().manual_seed(0)) == greedy
    assert decode(m, codes, DecodeConfig("sample", temperature=0, max_len=30)) == greedy
    assert decode(m, codes, DecodeConfig("sample", temperature=1e-4, max_len=30),
                  torch.Generator().manual_seed(3)) == greedy


def test_sampling_is_seeded_and_varied():
    m, codes = model(), z()
    cfg = DecodeConfig("top_p", top_p=0.95, temperature=1.5, max_len=30)
    a = decode(m, codes, cfg, torch.Generator().manual_seed(7))
    b = decode(m, codes, cfg, torch.Generator().manual_seed(7))
    c = decode(m, codes, cfg, torch.Generator().manual_seed(8))
    assert a == b and a != c


def test_never_emitting_eos_is_cut_at_max_len():
    m = model()
    with torch.no_grad():
        m.decoder.proj.bias[m.eos_id] = -1e4  # <eos> can never be chosen
    for cfg in (DecodeConfig("greedy", max_len=9), DecodeConfig("sample", max_len=9),
                DecodeConfig("beam", beam_size=3, max_len=9)):
        out = decode(m, z(), cfg, torch.Generator().manual_seed(0))
        assert [len(s) for s in out] == [9] * 6, cfg.strategy


def test_beam_search_finds_at_least_the_greedy_score():
    m, codes = model(), z()

    def logp(ids, code):
        tokens = torch.tensor([ids + [m.eos_id]])
        return -m.reconstruction(tokens, code[None]).item()

    greedy = greedy_decode(m, codes, max_len=30)
    beam = decode(m, codes, DecodeConfig("beam", beam_size=4, length_penalty=0, max_len=30))
    for g, b, code in zip(greedy, beam, codes):
        assert logp(b, code) >= logp(g, code) - 1e-4


def test_language_model_decodes_without_latent():
    m = model(kind="lm")
    out = decode(m, None, DecodeConfig("greedy", max_len=12), batch_size=3)
    assert len(out) == 3 and out[0] == out[1] == out[2]
    with pytest.raises(ValueError, match="batch_size"):
        decode(m, None)


def test_no_strategy_emits_pad_or_bos():
    m = model()
    with torch.no_grad():  # an untrained-looking model that puts nearly all its mass on them
        m.decoder.proj.bias[m.pad_id] = 50.0
        m.decoder.proj.bias[m.bos_id] = 49.0
    strategies = (DecodeConfig("greedy", max_len=9), DecodeConfig("sample", max_len=9),
                  DecodeConfig("top_k", top_k=2, max_len=9), DecodeConfig("top_p", top_p=0.5, max_len=9),
                  DecodeConfig("beam", beam_size=3, max_len=9))
    for cfg in strategies:
        out = decode(m, z(), cfg, torch.Generator().manual_seed(0))
        ids = {i for s in out for i in s}
        assert not ids & {m.pad_id, m.bos_id}, cfg.strategy
        # greedy then picks a real token at every step: no sentence comes out empty
        if cfg.strategy == "greedy":
            assert all(len(s) > 0 for s in out)
    # with the specials forbidden, beam 1 is still exactly greedy
    assert decode(m, z(), DecodeConfig("beam", beam_size=1, max_len=9)) == greedy_decode(m, z(), max_len=9)
