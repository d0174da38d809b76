import math

import pytest
import torch

from vae_text.config import ModelConfig
from vae_text.data.corpus import (
    BOS,
    EOS,
    PAD,
    UNK,
    DataConfig,
    Vocab,
    collate,
    encode_split,
    load_corpus,
)
from vae_text.metrics import (
    EvalConfig,
    active_units,
    evaluate,
    iw_log_likelihood,
    mutual_information,
)
from vae_text.model.latent import DiagonalGaussian
from vae_text.model.textvae import build_model

WORDS = ["a", "b", "c"]  # vocabulary 4 specials + 3 = 7


def tiny_vae(latent=1, steps=150, sentences=None, seed=0, beta=0.2, **kw):
    """A small VAE trained briefly so that p(x|z) really depends on z."""
    torch.manual_seed(seed)
    vocab = Vocab([PAD, BOS, EOS, UNK, *WORDS])
    sentences = sentences or [["a"], ["b", "c"], ["c", "c", "a"], ["b"], ["a", "b"], ["c"]]
    split = encode_split(sentences, vocab)
    cfg = ModelConfig(embed_size=5, encoder_hidden=9, latent_size=latent, decoder_hidden=8, **kw)
    model = build_model(cfg, vocab)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    batch = collate(split, torch.arange(len(split)))
    for _ in range(steps):
        out = model(batch.tokens, batch.lengths)
        loss = out.rec.mean() + beta * out.kl.sum(-1).mean()  # beta < 1: z carries information
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), vocab, split


def quadrature(model, batch, points=4001, span=12.0):
    """Exact log p(x) and exact ELBO per sentence for a 1-D latent, by integrating over z."""
    z = torch.linspace(-span, span, points, dtype=torch.float64)
    dz = float(z[1] - z[0])
    log_px, elbo = [], []
    with torch.no_grad():
        posterior = model.encode(batch.tokens, batch.lengths)
        mu, logvar = posterior.mu, posterior.logvar
        for i in range(len(batch)):
            tokens = batch.tokens[i: i + 1].expand(points, -1)
            log_px_z = -model.reconstruction(tokens, z[:, None].float()).double()  # (points,)
            log_prior = -0.5 * (math.log(2 * math.pi) + z**2)
            log_px.append(torch.logsumexp(log_px_z + log_prior, 0) + math.log(dz))
            q = DiagonalGaussian(mu[i].double(), logvar[i].double()).log_prob(z[:, None]).exp()
            kl = 0.5 * (mu[i] ** 2 + logvar[i].exp() - 1 - logvar[i]).sum().double()
            elbo.append((q * log_px_z).sum() * dz - kl)
    return torch.stack(log_px), torch.stack(elbo)


def test_iw_nll_is_a_bound_that_tightens_to_the_exact_nll():
    model, vocab, split = tiny_vae()
    # Make q(z|x) wider than the prior (sigma = 1.5): then the importance weights p(x, z) / q(z|x)
    # are bounded, the IW estimates have finite variance, and the ELBO has a clear gap to close.
    # (A trained, too-narrow q gives heavy-tailed weights that converge far more slowly in K.)
    with torch.no_grad():
        model.head.linear.weight[1:] = 0.0
        model.head.linear.bias[1:] = math.log(1.5**2)
    batch = collate(split, torch.arange(len(split)))
    log_px, elbo = quadrature(model, batch)
    # sanity of the quadrature: the probabilities of all sentences cannot exceed 1
    assert float(log_px.exp().sum()) < 1.0
    # the ordering in K holds in expectation: average the noisier small-K estimates over seeds
    nll = {k: -torch.stack([iw_log_likelihood(model, batch, k, seed=s).mean() for s in range(reps)]).mean()
           for k, reps in ((1, 400), (10, 100), (100, 20), (20_000, 1))}
    exact_nll = float(-log_px.mean())
    neg_elbo = float(-elbo.mean())
    assert neg_elbo > exact_nll + 1.0  # a clear gap for the bound to close
    assert float(nll[1]) == pytest.approx(neg_elbo, abs=0.1)  # K = 1 estimates -ELBO
    assert nll[1] > nll[10] > nll[100] > exact_nll - 0.01
    assert float(nll[20_000]) == pytest.approx(exact_nll, abs=0.02)


def test_iw_nll_does_not_depend_on_chunking_batching_order_or_padding():
    model, vocab, split = tiny_vae(latent=3)
    big = iw_log_likelihood(model, collate(split, torch.arange(len(split))), 50, seed=4)
    small = iw_log_likelihood(model, collate(split, torch.arange(len(split))), 50, seed=4,
                              memory_mb=1e-4)  # one (sentence, sample) row per decoder chunk
    torch.testing.assert_close(big, small, rtol=0, atol=1e-5)
    reordered = torch.tensor([5, 3, 0, 1, 4, 2])
    other = iw_log_likelihood(model, collate(split, reordered), 50, seed=4)
    torch.testing.assert_close(other, big[reordered], rtol=0, atol=1e-5)
    alone = torch.cat([iw_log_likelihood(model, collate(split, torch.tensor([i])), 50, seed=4)
                       for i in range(len(split))])
    torch.testing.assert_close(alone, big, rtol=0, atol=1e-5)
    assert not torch.allclose(iw_log_likelihood(model, collate(split, torch.arange(6)), 50, seed=5), big)


def test_suite_is_invariant_to_batch_size_and_order():
    sentences = [[WORDS[(i * j) % 3] for j in range(1 + i % 7)] for i in range(40)]
    model, vocab, split = tiny_vae(latent=4, steps=40, sentences=sentences)
    cfg = dict(iw_samples=20, progress=False)
    a = evaluate(model, split, vocab, EvalConfig(batch_size=3, **cfg))
    b = evaluate(model, split, vocab, EvalConfig(batch_size=64, **cfg))
    c = evaluate(model, encode_split(sentences[::-1], vocab), vocab, EvalConfig(batch_size=7, **cfg))
    for key in ("rec", "kl", "neg_elbo", "ppl_elbo", "nll_iw", "ppl_iw", "mi", "au",
                "token_accuracy", "recon_exact", "recon_bleu", "tokens", "sentences"):
        assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
        assert a[key] == pytest.approx(c[key], rel=1e-5, abs=1e-6), key
    assert a["tokens"] == sum(len(s) + 1 for s in sentences) and a["sentences"] == 40
    assert a["ppl_iw"] == pytest.approx(math.exp(a["nll_iw"] * 40 / a["tokens"]))
    assert a["nll_iw"] <= a["neg_elbo"] + 0.5
    again = evaluate(model, split, vocab, EvalConfig(batch_size=3, **cfg))
    assert again["nll_iw"] == a["nll_iw"] and again["mi"] == a["mi"]  # seeded: reproducible


def test_mutual_information_estimator():
    g = torch.Generator().manual_seed(0)
    n, latent = 3000, 3
    # an encoder that ignores its input: every posterior the same, MI = 0
    mu = torch.full((n, latent), 0.3)
    logvar = torch.full((n, latent), -0.5)
    z = mu + (0.5 * logvar).exp() * torch.randn(n, latent, generator=g)
    assert abs(mutual_information(DiagonalGaussian(mu, logvar), z)) < 0.03
    # mu ~ N(0, s^2), q(z|x) = N(mu, sigma^2): I = latent/2 * log(1 + s^2 / sigma^2)
    s, sigma = 1.0, 1.0
    mu = s * torch.randn(n, latent, generator=g)
    logvar = torch.full((n, latent), 2 * math.log(sigma))
    z = mu + sigma * torch.randn(n, latent, generator=g)
    assert mutual_information(DiagonalGaussian(mu, logvar), z) == pytest.approx(latent / 2 * math.log(2),
                                                                                abs=0.06)
    # very informative posteriors: capped by log N
    mu = 10 * torch.randn(n, latent, generator=g)
    logvar = torch.full((n, latent), -6.0)
    z = mu + math.exp(-3) * torch.randn(n, latent, generator=g)
    assert mutual_information(DiagonalGaussian(mu, logvar), z) == pytest.approx(math.log(n), abs=0.01)


def test_active_units_on_constructed_encoders():
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([0.0, 0.05, 0.2, 1.0, 3.0])  # variances 0, 0.0025, 0.04, 1, 9
    mu = torch.randn(5000, 5, generator=g) * scales + 7.0
    count, variances = active_units(mu, threshold=0.01)
    assert count == 3
    assert variances == pytest.approx((scales**2).tolist(), rel=0.1, abs=1e-6)
    assert active_units(mu, threshold=0.05)[0] == 2


def test_memorised_corpus_reconstructs_exactly():
    sentences = [["a", "b", "c"], ["c", "a"], ["b", "b", "a", "c"], ["a"], ["c", "b", "b"]]
    model, vocab, split = tiny_vae(latent=4, steps=400, sentences=sentences)
    m = evaluate(model, split, vocab, EvalConfig(iw_samples=0, progress=False))
    assert m["recon_exact"] == 1.0 and m["token_accuracy"] == 1.0
    assert m["recon_bleu"] == pytest.approx(100.0)


def test_language_model_nll_is_exact_sum_of_sentence_losses():
    vocab = Vocab([PAD, BOS, EOS, UNK, *WORDS])
    split = encode_split([["a", "b"], ["c"], ["a", "a", "a"]], vocab)
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="lm", embed_size=5, decoder_hidden=8), vocab).eval()
    m = evaluate(model, split, vocab, EvalConfig(progress=False))
    batch = collate(split, torch.arange(3))
    with torch.no_grad():
        per_sentence = model.reconstruction(batch.tokens, None)
    assert m["nll"] == pytest.approx(per_sentence.mean().item(), rel=1e-6)
    assert m["ppl"] == pytest.approx(math.exp(per_sentence.sum().item() / 9), rel=1e-6)
    assert "nll_iw" not in m and "mi" not in m


@pytest.mark.slow
def test_ptb_test_counts_and_ppl_denominator(ptb_dir, ptb_cache):
    corpus = load_corpus(DataConfig(dir=str(ptb_dir), cache_dir=str(ptb_cache)))
    torch.manual_seed(0)
    model = build_model(ModelConfig(embed_size=8, encoder_hidden=12, latent_size=3, decoder_hidden=10),
                        corpus.tokenizer).eval()
    m = evaluate(model, corpus["test"], corpus.tokenizer,
                 EvalConfig(iw_samples=0, reconstruct=False, batch_size=512, progress=False),
                 full=False)
    assert (m["sentences"], m["tokens"]) == (3761, 82430)
    assert m["ppl_elbo"] == pytest.approx(math.exp(m["neg_elbo"] / 21.917), rel=1e-4)


def test_mi_over_a_capped_subset():
    sentences = [[WORDS[(i * j) % 3] for j in range(1 + i % 7)] for i in range(40)]
    model, vocab, split = tiny_vae(latent=4, steps=40, sentences=sentences)
    cfg = dict(iw_samples=0, reconstruct=False, progress=False, seed=3)
    whole = evaluate(model, split, vocab, EvalConfig(**cfg))
    assert whole["mi_sentences"] == 40
    same = evaluate(model, split, vocab, EvalConfig(mi_max_sentences=40, **cfg))
    assert same["mi"] == whole["mi"]  # a cap at N is the whole set
    capped = evaluate(model, split, vocab, EvalConfig(mi_max_sentences=11, **cfg))
    assert capped["mi_sentences"] == 11 and capped["mi"] <= math.log(11) + 1e-9
    # the same 11 sentences (the seeded subset) evaluated on their own give the same MI
    rows = torch.randperm(40, generator=torch.Generator().manual_seed(3))[:11].sort().values
    alone = evaluate(model, encode_split([sentences[i] for i in rows.tolist()], vocab), vocab,
                     EvalConfig(**cfg))
    # MI is a difference of terms near log N: float32 noise of the encoder's batching is absolute
    assert capped["mi"] == pytest.approx(alone["mi"], rel=1e-6, abs=1e-6)
    other = evaluate(model, split, vocab, EvalConfig(mi_max_sentences=11, batch_size=3, **cfg))
    assert other["mi"] == pytest.approx(capped["mi"], rel=1e-6, abs=1e-6)  # the subset is the split's
    with pytest.raises(Exception, match="eval.mi_max_sentences"):
        EvalConfig(mi_max_sentences=1)


def closed_form_first_term_mi(q: DiagonalGaussian, z: torch.Tensor) -> float:
    """The former estimator, written out: -entropy in closed form for the first term."""
    mu, logvar, z = q.mu.double(), q.logvar.double(), z.double()
    neg_entropy = (-0.5 * mu.shape[1] * math.log(2 * math.pi) - 0.5 * (1 + logvar).sum(-1)).mean()
    pairs = -0.5 * (math.log(2 * math.pi) + logvar[None] + (z[:, None] - mu[None]).pow(2)
                    / logvar[None].exp()).sum(-1)  # (N, N): log q(z_i | x_j)
    return float(neg_entropy - (torch.logsumexp(pairs, 1) - math.log(len(z))).mean())


def test_mi_at_the_sample_has_the_expectation_of_the_closed_form_estimator_and_less_variance():
    """Both estimate the same I(x; z) (x uniform over the N sentences): over 300 draws of z the
    paired difference has mean 0, and is exactly mean_i sum_u (eps_iu^2 - 1) / 2, whose sd is
    sqrt(Z / (2 N)); that noise is what the sample's log q(z|x) cancels. Overlapping posteriors
    in many dimensions, as a text VAE's (here MI ~ 1 nat, Z = 24): the sd drops about threefold
    (with few dimensions and well-separated posteriors the two are close)."""
    g = torch.Generator().manual_seed(0)
    n, latent, draws = 120, 24, 300
    q = DiagonalGaussian(0.3 * torch.randn(n, latent, generator=g), torch.randn(n, latent, generator=g) * 0.2)
    new, old = [], []
    for _ in range(draws):
        z = q.rsample(generator=g)
        new.append(mutual_information(q, z))
        old.append(closed_form_first_term_mi(q, z))
    new, old = torch.tensor(new, dtype=torch.float64), torch.tensor(old, dtype=torch.float64)
    diff = old - new
    assert abs(float(diff.mean())) < 4 * float(diff.std()) / math.sqrt(draws)
    assert float(diff.std()) == pytest.approx(math.sqrt(latent / (2 * n)), rel=0.15)
    assert float(new.std()) < 0.5 * float(old.std())
    # the expectation itself, independently: E_z of the at-sample estimator by many more z per x
    zs = q.rsample((400,), generator=g)  # (400, N, Z)
    own = q.log_prob(zs).double()  # (400, N)
    agg = torch.logsumexp(q.log_prob(zs[:, :, None]).double(), dim=-1) - math.log(n)  # (400, N)
    assert float(new.mean()) == pytest.approx(float((own - agg).mean()), abs=4 * float(new.std()) / math.sqrt(draws) + 1e-3)


def test_mi_at_the_sample_is_zero_for_an_encoder_that_ignores_x_and_at_most_log_n():
    g = torch.Generator().manual_seed(1)
    n, latent = 70, 3
    same = DiagonalGaussian(torch.full((n, latent), 0.4), torch.full((n, latent), -0.3))
    assert mutual_information(same, same.rsample(generator=g)) == pytest.approx(0.0, abs=1e-12)
    apart = DiagonalGaussian(10 * torch.randn(n, latent, generator=g), torch.full((n, latent), -6.0))
    mi = mutual_information(apart, apart.rsample(generator=g), chunk=8)
    assert mi <= math.log(n) + 1e-12 and mi == pytest.approx(math.log(n), abs=1e-6)
