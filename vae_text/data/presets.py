"""The field's labelled benchmarks built from public Hugging Face datasets: data=yahoo, yelp, snli.

    python -m vae_text.train +experiment=ptb data=yahoo      # first run: downloads and prepares

Text-VAE papers report Yahoo Answers and Yelp reviews (Yang et al. 2017's splits, used by He et al.
2019 and Li et al. 2019) and SNLI sentences (Li et al. 2019). Their files were passed around outside
the hub; a recipe here rebuilds splits of the same sizes, vocabulary cap and length limit from the
hub's copy of the source data, keeps each row's label for the latent probes (vae_text.generation.probes) and
writes <name>.{train,valid,test}.txt and .labels into data.dir, which is then an ordinary folder
corpus (nothing is fetched again while it exists). docs/data.md says how they differ from the papers'.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vae_text.config import SPLITS, DataConfig
from vae_text.core.errors import DataError
from vae_text.core.utils import atomic_write, error_line
from vae_text.data.online import fetch_failed
from vae_text.data.tokenizer import UNK

log = logging.getLogger("vae_text.data")

TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")  # words, numbers, a clitic, one punctuation mark
MARKUP = re.compile(r"<br\s*/?>|\\n|\\r|\\t")  # line breaks the sources spell out


def words_of(text: str) -> list[str]:
    """Lower-cased tokens: words (with a clitic such as 's), numbers and single punctuation marks."""
    return TOKEN.findall(MARKUP.sub(" ", text.lower()))


@dataclass(frozen=True)
class Recipe:
    """How one benchmark is cut from its source dataset."""

    text: Callable[[dict], str]  # a row's text
    label: str  # the column of its label
    sizes: tuple[int, int, int]  # train, valid, test sentences (or documents)
    sources: tuple[str, str, str]  # the source split each of ours is drawn from
    vocab: int  # words kept, <unk> included (the rest become <unk>), counted on our train split
    max_words: int  # longer rows are skipped (the papers' length limit)
    min_words: int = 1
    seed: int = 0
    unique: bool = False  # drop repeated texts (SNLI repeats each premise for its 3 hypotheses)


def _yahoo_text(row: dict) -> str:
    return " ".join(str(row.get(k) or "") for k in ("question_title", "question_content", "best_answer"))


RECIPES: dict[str, Recipe] = {
    # Yang et al. 2017: 100k / 10k / 10k documents, vocabulary 20k, at most 200 words; 10 topics
    "yahoo": Recipe(_yahoo_text, "topic", (100_000, 10_000, 10_000), ("train", "train", "test"),
                    20_000, 200),
    # Yang et al. 2017: 100k / 10k / 10k reviews, vocabulary ~20k, at most 200 words; 1-5 stars
    "yelp": Recipe(lambda row: row["text"], "label", (100_000, 10_000, 10_000),
                   ("train", "train", "test"), 20_000, 200),
    # Li et al. 2019: 100k / 10k / 10k sentences, vocabulary ~10k; the hypotheses, labelled by their
    # pair's gold relation (entailment 0, neutral 1, contradiction 2; rows without one are skipped)
    "snli": Recipe(lambda row: row["hypothesis"], "label", (100_000, 10_000, 10_000),
                   ("train", "validation", "test"), 10_000, 50, unique=True),
}


def select(rows: list[dict], recipe: Recipe, n: int, rng: random.Random, taken: set[int],
           where: str) -> list[tuple[list[str], str]]:
    """n rows (words, label) drawn at random, within the length limits, not in `taken`."""
    order = list(range(len(rows)))
    rng.shuffle(order)
    out, seen = [], set()
    for i in order:
        if len(out) == n:
            break
        row = rows[i]
        if i in taken or row[recipe.label] is None or int(row[recipe.label]) < 0:
            continue
        words = words_of(recipe.text(row))
        if not recipe.min_words <= len(words) <= recipe.max_words:
            continue
        if recipe.unique:
            key = " ".join(words)
            if key in seen:
                continue
            seen.add(key)
        taken.add(i)
        out.append((words, str(row[recipe.label])))
    if len(out) < n:
        log.warning("%s: only %d rows fit the recipe (%d wanted); using them all", where, len(out), n)
    if not out:
        raise DataError(f"{where}: no row fits the recipe (text of {recipe.min_words}-"
                        f"{recipe.max_words} words with a label)")
    return out


def build_splits(tables: dict[str, list[dict]], recipe: Recipe, where: str) -> dict[str, list]:
    """Our three splits from the source splits: random, disjoint, rare words as <unk>."""
    rng = random.Random(recipe.seed)
    taken: dict[str, set[int]] = {name: set() for name in tables}
    out = {}
    for split, n, source in zip(SPLITS, recipe.sizes, recipe.sources):
        if source not in tables:
            raise DataError(f"{where}: has no split {source!r} (it has {sorted(tables)})")
        out[split] = select(tables[source], recipe, n, rng, taken[source], f"{where}[{source}]")
    counts = Counter(w for words, _ in out["train"] for w in words)
    counts.pop(UNK, None)
    keep = {w for w, _ in counts.most_common(recipe.vocab - 1)}  # + <unk> = recipe.vocab words
    return {split: [([w if w in keep else UNK for w in words], label) for words, label in rows]
            for split, rows in out.items()}


def prepare(cfg: DataConfig, directory: Path, key: str = "data.dir") -> None:
    """Download cfg.hub.id with `datasets`, cut the recipe cfg.prepare from it and write the split
    and label files into `directory` (the splits' card: prepared.json); a failed download is one
    line naming `key`."""
    if cfg.label_files is None:
        raise DataError(f"data.prepare={cfg.prepare} writes labels: set data.label_files")
    recipe, hub = RECIPES[cfg.prepare], cfg.hub
    if cfg.prepare_sizes is not None:
        recipe = dataclasses.replace(recipe, sizes=tuple(cfg.prepare_sizes))
    try:
        import datasets

        ds = datasets.load_dataset(hub.id, hub.config, revision=hub.revision)
        tables = {name: ds[name].to_list() for name in set(recipe.sources) if name in ds}
    except Exception as err:  # offline, unknown id: one fix
        reason = error_line(err, 160)
        raise fetch_failed(cfg, directory, reason, key) from None
    splits = build_splits(tables, recipe, hub.id)
    # written beside it, then renamed: a crash never leaves a half-prepared folder that looks done
    tmp = directory.with_name(f".{directory.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for split, rows in splits.items():
        atomic_write(tmp / cfg.files[split], "".join(f"{' '.join(w)}\n" for w, _ in rows))
        atomic_write(tmp / cfg.label_files[split], "".join(f"{label}\n" for _, label in rows))
    card = {"recipe": cfg.prepare, "source": hub.id, "revision": hub.revision, "labels": recipe.label,
            "sizes": {s: len(rows) for s, rows in splits.items()}, "vocab": recipe.vocab,
            "max_words": recipe.max_words, "seed": recipe.seed}
    atomic_write(tmp / "prepared.json", json.dumps(card, indent=2) + "\n")
    os.replace(tmp, directory)
    log.info("prepared %s from %s into %s (%s)", cfg.prepare, hub.id, directory, card["sizes"])
