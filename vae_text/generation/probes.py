"""What the latent space encodes: linear probes from mu, interpolation smoothness, neighbours.

The half of the generation suite (vae_text.generation.suite) that looks at q(z|x) rather than at samples;
docs/generation.md defines each number. Everything here uses the posterior mean mu of a sentence.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vae_text.config import DecodeConfig, GenerationConfig
from vae_text.data.batches import batch_plan, collate
from vae_text.data.corpus import encode_split
from vae_text.data.tokenizer import Tokenizer
from vae_text.model.decoding import decode
from vae_text.model.textvae import TextVAE
from vae_text.pipeline import interpolate

# --- linear probes ------------------------------------------------------------------------------


def length_buckets(train_lengths: Sequence[int], k: int) -> Tensor:
    """The k-1 inner edges of k length classes: quantiles of the training lengths (so the classes
    are about equally frequent in train and chance is near 1/k)."""
    lengths = torch.tensor(train_lengths, dtype=torch.float64)
    return torch.quantile(lengths, torch.arange(1, k, dtype=torch.float64) / k).unique()


def bucketize(lengths: Sequence[int], edges: Tensor) -> Tensor:
    """Class of each length: how many edges it reaches, (N,) in [0, len(edges)]."""
    return torch.bucketize(torch.tensor(lengths, dtype=torch.float64), edges, right=True)


def fit_probe(x: Tensor, y: Tensor, classes: int, steps: int = 300, l2: float = 1e-3) -> tuple:
    """Multinomial logistic regression on standardised features, full batch (L-BFGS); returns
    (mean, std, weight, bias)."""
    x = x.double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
    x = (x - mean) / std
    weight = torch.zeros(x.shape[1], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight + bias, y) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return mean, std, weight.detach(), bias.detach()


def probe_accuracy(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor,
                   steps: int = 300) -> dict:
    """Test accuracy of a probe fitted on train, beside chance: the accuracy of always answering
    the most frequent training class."""
    classes = int(max(y_train.max(), y_test.max())) + 1
    mean, std, weight, bias = fit_probe(x_train, y_train, classes, steps)
    predicted = (((x_test.double() - mean) / std) @ weight + bias).argmax(-1)
    majority = int(torch.bincount(y_train, minlength=classes).argmax())
    return {"accuracy": float((predicted == y_test).double().mean()),
            "chance": float((y_test == majority).double().mean()), "classes": classes}


def label_ids(train: Sequence[str], test: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Labels as class ids (sorted label names); a test label never seen in train gets its own id."""
    names = {name: i for i, name in enumerate(sorted(set(train) | set(test)))}
    return (torch.tensor([names[t] for t in train]), torch.tensor([names[t] for t in test]))


# --- the posterior means ------------------------------------------------------------------------


@torch.no_grad()
def posterior_means(model: TextVAE, sentences: Sequence[Sequence[str]], tokenizer: Tokenizer,
                    batch_size: int = 64) -> Tensor:
    """mu of each sentence (N, Z), in the order given."""
    split = encode_split(sentences, tokenizer)
    device = next(model.parameters()).device
    mu = torch.zeros(len(split), model.latent_size)
    for index in batch_plan(split, batch_size, shuffle=False):
        batch = collate(split, index).to(device)
        mu[index] = model.encode(batch.tokens, batch.lengths).mean.float().cpu()
    return mu


# --- interpolation and neighbours ---------------------------------------------------------------


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Word-level Levenshtein distance: insertions, deletions and substitutions."""
    row = list(range(len(b) + 1))
    for i, wa in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, wb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (wa != wb))
    return row[-1]


def path_changes(sentences: Sequence[Sequence[str]]) -> float:
    """Mean number of words that change (edit distance) between consecutive points of a path."""
    steps = [edit_distance(a, b) for a, b in zip(sentences, sentences[1:])]
    return sum(steps) / len(steps)


@torch.no_grad()
def interpolation_smoothness(model: TextVAE, tokenizer: Tokenizer, mu: Tensor, pairs: int,
                             steps: int, method: str = "linear", max_len: int = 50) -> float:
    """Words changed per step, averaged over the paths between consecutive rows of mu (pairs
    (0, 1), (2, 3), ...), each decoded greedily at `steps` points. Lower is smoother; the
    endpoints' own distance bounds how low it can be."""
    ts = torch.linspace(0, 1, steps).tolist()
    changes = []
    for p in range(min(pairs, len(mu) // 2)):
        a, b = mu[2 * p], mu[2 * p + 1]
        z = torch.stack([interpolate(a, b, t, method) for t in ts])
        ids = decode(model, z.to(next(model.parameters()).device), DecodeConfig("greedy", max_len=max_len))
        changes.append(path_changes([tokenizer.decode(s) for s in ids]))
    return sum(changes) / len(changes) if changes else float("nan")


def nearest(query: Tensor, keys: Tensor, k: int) -> Tensor:
    """Indices (Q, k) of the k rows of `keys` nearest to each row of `query` (Euclidean)."""
    return torch.cdist(query.double(), keys.double()).topk(min(k, len(keys)), largest=False).indices


# --- the suite's latent half ----------------------------------------------------------------------


def latent_metrics(model: TextVAE, tokenizer: Tokenizer, train: Sequence[Sequence[str]],
                   test: Sequence[Sequence[str]], cfg: GenerationConfig,
                   labels: tuple[Sequence[str], Sequence[str]] | None = None) -> dict:
    """Probe accuracies (length bucket, and the label when given), interpolation smoothness and
    nearest training neighbours of a few test sentences. At most cfg.probe_sentences training
    sentences are used, drawn at random (seeded by cfg.seed) so that none of the corpus's order shows."""
    keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))
    keep = keep[: cfg.probe_sentences].sort().values.tolist()
    train = [train[i] for i in keep]
    mu_train = posterior_means(model, train, tokenizer)
    mu_test = posterior_means(model, test, tokenizer)
    edges = length_buckets([len(s) for s in train], cfg.length_buckets)
    length = probe_accuracy(mu_train, bucketize([len(s) for s in train], edges), mu_test,
                            bucketize([len(s) for s in test], edges), cfg.probe_steps)
    out = {"probe_accuracy": length["accuracy"], "probe_chance": length["chance"],
           "probe_classes": length["classes"], "probe_length_edges": edges.tolist()}
    if labels is not None:
        y_train, y_test = label_ids([labels[0][i] for i in keep], labels[1])
        label = probe_accuracy(mu_train, y_train, mu_test, y_test, cfg.probe_steps)
        out.update(probe_label_accuracy=label["accuracy"], probe_label_chance=label["chance"],
                   probe_label_classes=label["classes"])
    out["interpolation_smoothness"] = interpolation_smoothness(
        model, tokenizer, mu_test, cfg.interpolation_pairs, cfg.interpolation_steps,
        cfg.interpolation, cfg.max_len)
    out["interpolation"] = cfg.interpolation
    shown = min(cfg.neighbours, len(test))
    if shown:
        idx = nearest(mu_test[:shown], mu_train, cfg.neighbours_k)
        out["neighbours"] = [{"sentence": " ".join(test[i]),
                              "nearest_train": [" ".join(train[j]) for j in idx[i].tolist()]}
                             for i in range(shown)]
    return out
