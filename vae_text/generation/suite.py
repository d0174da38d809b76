"""How good and how diverse a model's samples are (docs/generation.md has the definitions and papers).

    python -m vae_text.evaluate checkpoint=<run dir> generation=true [gen.reference_lm=<lm run>]

On N sentences decoded from the prior (seeded): forward PPL under a reference language model
(fluency), reverse PPL of a small LM trained on the samples and scored on the real test set
(coverage, Zhao et al. 2018), distinct-n (Li et al. 2016), self-BLEU (Zhu et al. 2018), the share of
samples copied from the training set and their lengths against the data's. The latent-space half
(probes, interpolation smoothness, neighbours) is vae_text.generation.probes.

Sentences are lists of words throughout; a sample is its words without <bos>/<eos>.
"""

from __future__ import annotations

import collections
import math
import random
import statistics
from collections.abc import Sequence

import torch

from vae_text.config import DecodeConfig, EvalConfig, GenerationConfig, ModelConfig
from vae_text.core.errors import ConfigError
from vae_text.data.batches import batch_plan, iterate
from vae_text.data.corpus import encode_split
from vae_text.data.tokenizer import Tokenizer
from vae_text.metrics import evaluate
from vae_text.model.decoding import decode
from vae_text.model.textvae import TextVAE, build_model
from vae_text.objectives import elbo_loss

Sentences = Sequence[Sequence[str]]
QUIET = EvalConfig(iw_samples=0, reconstruct=False, progress=False)  # exact NLL of an LM, no extras

# --- diversity: pure functions of word lists ------------------------------------------------------


def ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def distinct_n(sentences: Sentences, n: int) -> float:
    """Distinct n-grams / all n-grams over the whole set (Li et al. 2016); 0 when there are none."""
    grams = [g for s in sentences for g in ngrams(s, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(sentences: Sentences) -> float:
    """Mean sentence BLEU (0-100) of each sentence against all the others as references (Texygen,
    Zhu et al. 2018); sacrebleu's sentence BLEU with effective order, so short sentences score.
    Higher means the samples resemble each other: less diverse."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU(effective_order=True)
    texts = [" ".join(s) for s in sentences]
    if len(texts) < 2:
        raise ValueError("self-BLEU needs at least two sentences")
    scores = [bleu.sentence_score(t, texts[:i] + texts[i + 1:]).score for i, t in enumerate(texts)]
    return sum(scores) / len(scores)


def copy_rate(samples: Sentences, train: Sentences) -> float:
    """The share of samples that are, word for word, a sentence of the training set."""
    seen = {tuple(s) for s in train}
    return sum(tuple(s) in seen for s in samples) / len(samples)


def js_divergence(a: Sequence[int], b: Sequence[int]) -> float:
    """Jensen-Shannon divergence (nats, in [0, log 2]) between the empirical distributions of two
    integer samples (here: sentence lengths in words)."""
    pa, pb = collections.Counter(a), collections.Counter(b)
    js = 0.0
    for k in set(pa) | set(pb):
        p, q = pa[k] / len(a), pb[k] / len(b)
        m = (p + q) / 2
        js += (p * math.log(p / m) if p else 0.0) + (q * math.log(q / m) if q else 0.0)
    return js / 2


def length_stats(samples: Sentences, data: Sentences) -> dict:
    """Mean and standard deviation of the lengths (words) of samples and data, and their JS divergence."""
    a, b = [len(s) for s in samples], [len(s) for s in data]
    return {"length_mean": statistics.fmean(a), "length_std": statistics.pstdev(a),
            "data_length_mean": statistics.fmean(b), "data_length_std": statistics.pstdev(b),
            "length_js": js_divergence(a, b)}


# --- samples and the two perplexities -------------------------------------------------------------


@torch.no_grad()
def prior_samples(model: TextVAE, tokenizer: Tokenizer, n: int, cfg: GenerationConfig,
                  seed: int | None = None) -> list[list[str]]:
    """n sentences: z ~ p(z) (a language model: from the decoder alone), decoded by cfg.decoding."""
    g = torch.Generator().manual_seed(cfg.seed if seed is None else seed)
    decoding = DecodeConfig(cfg.decoding, max_len=cfg.max_len, temperature=cfg.temperature)
    device = next(model.parameters()).device
    out = []
    for start in range(0, n, cfg.batch_size):
        size = min(cfg.batch_size, n - start)
        z = model.prior.sample(size, g).to(device) if model.has_latent else None
        out += [tokenizer.decode(ids) for ids in decode(model, z, decoding, g, batch_size=size)]
    return out


def forward_ppl(lm: TextVAE, lm_tokenizer: Tokenizer, samples: Sentences) -> dict:
    """Perplexity of the samples under a reference language model: its exact NLL
    (vae_text.metrics.evaluate) on the samples tokenized with its own tokenizer. A word it does not
    know becomes <unk>, which is cheap to predict: `forward_unk_rate` says how often that happened."""
    if lm.has_latent:
        raise ConfigError("gen.reference_lm must be a language model (model=lm): a VAE's "
                          "likelihood is only bounded, not exact")
    split = encode_split(samples, lm_tokenizer)
    unk = int((split.ids == lm_tokenizer.unk_id).sum())
    result = evaluate(lm, split, cfg=QUIET)
    return {"forward_ppl": result["ppl"], "forward_nll": result["nll"],
            "forward_unk_rate": unk / max(1, split.num_tokens)}


def train_lm(sentences: Sentences, tokenizer: Tokenizer, cfg: GenerationConfig,
             device: torch.device | str = "cpu") -> TextVAE:
    """A small LSTM language model (build_model with kind=lm) trained on `sentences` for
    cfg.reverse_epochs epochs with Adam on the project's objective (elbo_loss; no latent, no KL)."""
    torch.manual_seed(cfg.seed)  # the LM's initial weights
    model_cfg = ModelConfig(kind="lm", embed_size=cfg.reverse_embed, decoder_hidden=cfg.reverse_hidden)
    lm = build_model(model_cfg, tokenizer).to(device).train()
    optimizer = torch.optim.Adam(lm.parameters(), lr=cfg.reverse_lr)
    split = encode_split(sentences, tokenizer)
    for epoch in range(cfg.reverse_epochs):
        for batch in iterate(split, batch_plan(split, cfg.reverse_batch_size, True, cfg.seed, epoch)):
            batch = batch.to(device)
            out = lm(batch.tokens, batch.lengths)
            loss = elbo_loss(out.rec, out.kl, beta=1.0)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lm.parameters(), 5.0)
            optimizer.step()
    return lm.eval()


def reverse_ppl(samples: Sentences, test: Sentences, tokenizer: Tokenizer, cfg: GenerationConfig,
                device: torch.device | str = "cpu") -> float:
    """Perplexity on the real `test` sentences of an LM trained on `samples` (Zhao et al. 2018):
    low when the samples cover the data. Both are tokenized with `tokenizer` (the model's own)."""
    lm = train_lm(samples, tokenizer, cfg, device)
    return evaluate(lm, encode_split(test, tokenizer), cfg=QUIET)["ppl"]


def load_reference(path: str, device: torch.device | str) -> tuple[TextVAE, Tokenizer]:
    from vae_text.pipeline import TextVAEPipeline

    pipe = TextVAEPipeline.from_pretrained(path, device=str(device))
    return pipe.model, pipe.tokenizer


def sample_metrics(model: TextVAE, tokenizer: Tokenizer, train: Sentences, test: Sentences,
                   cfg: GenerationConfig) -> tuple[dict, list[list[str]]]:
    """Every sample-side metric of the suite, and the samples themselves."""
    device = next(model.parameters()).device

    def draw(n: int, seed: int) -> list:  # the model's samples, or real sentences in their place
        if cfg.source == "data":
            return random.Random(seed).sample(train, min(n, len(train)))
        return prior_samples(model, tokenizer, n, cfg, seed)

    samples = draw(cfg.samples, cfg.seed)
    out: dict = {"source": cfg.source, "samples": len(samples), "decoding": cfg.decoding,
                 "temperature": cfg.temperature}
    if cfg.reference_lm:
        out.update(forward_ppl(*load_reference(cfg.reference_lm, device), samples))
        out["reference_lm"] = cfg.reference_lm
    else:
        out.update(forward_ppl=None, forward_note="skipped: set gen.reference_lm=<a model=lm run or export>")
    m = cfg.reverse_samples or cfg.samples
    reverse_set = samples if m == cfg.samples else draw(m, cfg.seed + 1)
    out.update(reverse_ppl=reverse_ppl(reverse_set, test, tokenizer, cfg, device),
               reverse_samples=len(reverse_set),
               reverse_epochs=cfg.reverse_epochs)
    for n in (1, 2, 3):
        out[f"distinct_{n}"] = distinct_n(samples, n)
    out["self_bleu"] = self_bleu(samples[: cfg.self_bleu_samples]) if len(samples) > 1 else None
    out["copy_rate"] = copy_rate(samples, train)
    out.update(length_stats(samples, test))
    return out, samples


# --- the suite ------------------------------------------------------------------------------------

TABLE = [  # (key, label, format) of the printed table
    ("forward_ppl", "forward PPL (reference LM)", ".2f"), ("reverse_ppl", "reverse PPL", ".2f"),
    ("distinct_1", "distinct-1", ".4f"), ("distinct_2", "distinct-2", ".4f"),
    ("distinct_3", "distinct-3", ".4f"), ("self_bleu", "self-BLEU", ".2f"),
    ("copy_rate", "copied from train", ".4f"), ("length_mean", "sample length (words)", ".2f"),
    ("data_length_mean", "data length (words)", ".2f"), ("length_js", "length JS divergence", ".4f"),
    ("probe_accuracy", "length probe accuracy", ".4f"), ("probe_chance", "length probe chance", ".4f"),
    ("probe_label_accuracy", "label probe accuracy", ".4f"),
    ("probe_label_chance", "label probe chance", ".4f"),
    ("interpolation_smoothness", "words changed per interpolation step", ".3f"),
]


def generation_suite(model: TextVAE, tokenizer: Tokenizer, data, split: str,
                     cfg: GenerationConfig) -> dict:
    """The whole suite on N prior samples and on `split` of the corpus `data` (a DataConfig):
    the `generation` object of the evaluation JSON."""
    import time

    from vae_text.data.text import read_labels, read_split
    from vae_text.generation.probes import latent_metrics

    started = time.perf_counter()
    train, test = read_split(data, "train")[0], read_split(data, split)[0]
    out, samples = sample_metrics(model, tokenizer, train, test, cfg)
    if cfg.source == "data":
        out.update(probe_accuracy=None, interpolation_smoothness=None,
                   latent_note="gen.source=data: real sentences, not the model's")
    elif model.has_latent:
        train_labels, test_labels = read_labels(data, "train"), read_labels(data, split)
        labels = (train_labels, test_labels) if train_labels and test_labels else None
        out.update(latent_metrics(model, tokenizer, train, test, cfg, labels))
    else:
        out.update(probe_accuracy=None, interpolation_smoothness=None,
                   latent_note="a language model has no latent space")
    out.update(examples=[" ".join(s) for s in samples[:10]], seed=cfg.seed,
               seconds=time.perf_counter() - started)
    return out


def format_generation(gen: dict) -> str:
    lines = ["| generation | |", "|---|---:|"]
    lines += [f"| {label} | {gen[key]:{fmt}} |" for key, label, fmt in TABLE if gen.get(key) is not None]
    return "\n".join(lines)
