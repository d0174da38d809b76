"""The model card of a save_pretrained folder: README.md built with huggingface_hub's ModelCard
(license, datasets, library, tags, the test metrics as `model-index` entries the hub displays)
and metrics.json, the record the card is made from.

The metrics are the run's own test evaluation (`eval_test.json`, written at the end of training)
when the model was loaded from its run directory; a folder saved from a saved folder keeps its
metrics.json. The card names no path of the machine that trained the model: the data by name and
file names, the command as it was typed, the full config in config.json.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

CARD_ROWS = [("rec", "rec (nats/sentence)"), ("kl", "KL (nats/sentence)"),
             ("neg_elbo", "-ELBO (nats/sentence)"), ("nll_iw", "IW-NLL (nats/sentence)"),
             ("ppl_iw", "IW-PPL"), ("nll", "NLL, exact (nats/sentence)"), ("ppl", "PPL, exact"),
             ("mi", "MI (nats)"), ("au", "active units"), ("iw_samples", "IW samples K"),
             ("sentences", "test sentences")]

# model-index entries: (type, name, the keys that give it, first found wins). A VAE's NLL and PPL
# are importance-weighted estimates; a language model's are exact.
INDEX_METRICS = [("nll", "NLL (nats/sentence)", ("nll_iw", "nll")),
                 ("perplexity", "PPL", ("ppl_iw", "ppl")),
                 ("kl", "KL (nats/sentence)", ("kl",)),
                 ("mutual_information", "MI (nats)", ("mi",)),
                 ("active_units", "AU", ("au",))]


def find_metrics(home: Path | None) -> dict | None:
    """The test metrics beside the model: a run's eval_test.json or a saved folder's metrics.json."""
    if home is not None and (home / "eval_test.json").is_file():
        return json.loads((home / "eval_test.json").read_text())
    if home is not None and (home / "metrics.json").is_file():
        return json.loads((home / "metrics.json").read_text()).get("test")
    return None


def train_command(home: Path | None) -> str | None:
    """`python -m vae_text.train <overrides>` from the run's .hydra/overrides.yaml (or the
    command a saved folder's metrics.json recorded)."""
    if home is None:
        return None
    overrides = home / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        items = yaml.safe_load(overrides.read_text()) or []
        return " ".join(["python -m vae_text.train", *(shlex.quote(str(o)) for o in items)])
    saved = home / "metrics.json"
    if saved.is_file():
        return json.loads(saved.read_text()).get("command")
    return None


def record(home: Path | None) -> dict[str, Any]:
    """metrics.json: the test metrics (numbers only) and the training command."""
    numbers = {k: v for k, v in (find_metrics(home) or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {"test": numbers, "command": train_command(home)}


def dataset_id(data: dict[str, Any]) -> str:
    """The data's hub dataset id where it has one (a `datasets` source, or files fetched from the
    hub), else its name."""
    if data.get("source") == "hf":
        return str(data.get("name"))
    return str((data.get("hub") or {}).get("id") or data.get("name", "text"))


def eval_results(numbers: dict[str, Any], data: dict[str, Any], split: str = "test") -> list[EvalResult]:
    """The test metrics as the hub's `model-index` entries (task: language modeling)."""
    out = []
    for kind, name, keys in INDEX_METRICS:
        key = next((k for k in keys if k in numbers), None)
        if key is None:
            continue
        if key.endswith("_iw"):
            name += f", importance-weighted (K={numbers.get('iw_samples', '?')})"
        out.append(EvalResult(task_type="text-generation", task_name="Language modeling",
                              dataset_type=dataset_id(data), dataset_name=str(data.get("name")),
                              dataset_config=data.get("config") if data.get("source") == "hf" else None,
                              dataset_split=split, metric_type=kind, metric_name=name,
                              metric_value=numbers[key]))
    return out


def build_card(base: ModelCardData, config: dict[str, Any], vocab_size: int,
               saved: dict[str, Any], model_id: str, name: str) -> ModelCard:
    """README.md: `base` (the class's library, license and tags) with the datasets and the
    test metrics, over a body that says what the model is, how to load it, and how it was made."""
    model, data, tok = config.get("model", {}), config.get("data", {}), config.get("tokenizer", {})
    numbers, command = saved.get("test") or {}, saved.get("command")
    results = eval_results(numbers, data)
    card_data = ModelCardData(**{**base.to_dict(), "datasets": [dataset_id(data)] if data else None,
                                 "model_name": name if results else None,
                                 "eval_results": results or None})
    kind = "language model" if model.get("kind") == "lm" else "variational autoencoder"
    lines = [f"# {name}", "",
             f"A sentence-level {kind} made with vae_text: encoder {model.get('encoder', '-')}, "
             f"decoder {model.get('decoder', '?')}, latent size {model.get('latent_size', '-')}, "
             f"vocabulary {vocab_size} ({tok.get('kind', 'word')} tokenizer).", "",
             "## Use", "", "With the `vae_text` package installed, from any directory:", "",
             "```python", "from vae_text.pipeline import TextVAEPipeline", "",
             f"vae = TextVAEPipeline.from_pretrained({model_id!r})",
             "vae.sample(5, decoding='top_p', seed=0)", "```", "",
             "## Data", "", _data_line(data), "", "## Test metrics", ""]
    if numbers:
        lines += ["| metric | value |", "|---|---:|"]
        lines += [f"| {label} | {numbers[k]:.4g} |" for k, label in CARD_ROWS if k in numbers]
    else:
        lines.append("Not evaluated: save the model from its run directory to carry the run's "
                     "eval_test.json.")
    lines += ["", "## How it was made", ""]
    lines += (["```bash", command, "```"] if command else
              ["Trained from Python with `vae_text.train.train(cfg)`, not from the command line."])
    lines += ["", "config.json holds the full training config; the model rebuilds from it and "
              "vocab.json with no other input.", ""]
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines))


def _data_line(data: dict[str, Any]) -> str:
    if not data:
        return "The model's config names no data (it was built in Python, not trained by vae_text)."
    if data.get("source", "files") == "files":
        files = ", ".join(Path(str(f)).name for f in (data.get("files") or {}).values())
        fetched = f" (from the hub dataset {data['hub']['id']})" if data.get("hub") else ""
        return f"{data.get('name')}: {files}{fetched}."
    config = f" ({data.get('config')})" if data.get("config") else ""
    return f"The `datasets` dataset {data.get('name')}{config}."


def readable(folder: Path) -> None:
    """`folder` and its files with the modes a plain mkdir and write would give them (0755 and
    0644 under the usual umask): a temporary folder is made 0700, safetensors writes 0600."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)
