"""The model card of an export folder: README.md (what the model is, the data and tokenizer, the
test metrics it was evaluated with, the command that trained it) and metrics.json.

The metrics are the run's own test evaluation (`eval_test.json`, written at the end of training)
when the model was loaded from its run directory; an export of an export keeps its metrics.json.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

import yaml

CARD_ROWS = [("rec", "rec (nats/sentence)"), ("kl", "KL (nats/sentence)"),
             ("neg_elbo", "-ELBO (nats/sentence)"), ("nll_iw", "IW-NLL (nats/sentence)"),
             ("ppl_iw", "IW-PPL"), ("nll", "NLL, exact (nats/sentence)"), ("ppl", "PPL, exact"),
             ("mi", "MI (nats)"), ("au", "active units"), ("iw_samples", "IW samples K"),
             ("sentences", "test sentences")]


def find_metrics(home: Path | None) -> dict | None:
    """The test metrics beside the model: a run's eval_test.json or an export's metrics.json."""
    if home is not None and (home / "eval_test.json").is_file():
        return json.loads((home / "eval_test.json").read_text())
    if home is not None and (home / "metrics.json").is_file():
        return json.loads((home / "metrics.json").read_text()).get("test")
    return None


def train_command(home: Path | None) -> str | None:
    """`python -m vae_text.train <overrides>` from the run's .hydra/overrides.yaml (or the
    command an export's card recorded)."""
    if home is None:
        return None
    overrides = home / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        items = yaml.safe_load(overrides.read_text()) or []
        return " ".join(["python -m vae_text.train", *(shlex.quote(str(o)) for o in items)])
    card = home / "metrics.json"
    if card.is_file():
        return json.loads(card.read_text()).get("command")
    return None


def write_card(folder: Path, config: dict[str, Any], vocab_size: int, home: Path | None) -> None:
    """README.md and metrics.json in `folder` (an export being written)."""
    metrics, command = find_metrics(home), train_command(home)
    model, data, tok = config.get("model", {}), config.get("data", {}), config.get("tokenizer", {})
    numbers = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
    (folder / "metrics.json").write_text(json.dumps({"test": numbers, "command": command}, indent=2))
    lines = ["---", "library_name: vae_text", "tags: [text, vae, variational-autoencoder, pytorch]",
             "---", "", f"# vae_text {model.get('kind', 'vae')}: a sentence-level VAE", "",
             f"Encoder {model.get('encoder', '?')}, decoder {model.get('decoder', '?')}, "
             f"latent size {model.get('latent_size', '?')}, vocabulary {vocab_size} "
             f"({tok.get('kind', 'word')} tokenizer).", "",
             "```python", "from vae_text.pipeline import TextVAEPipeline",
             f"vae = TextVAEPipeline.load({str(folder.name)!r})  # this folder",
             "vae.sample(5, decoding='top_p', seed=0)", "```", "", "## Data", "",
             (f"{data.get('name')}: {', '.join(map(str, (data.get('files') or {}).values()))} "
              f"in {data.get('dir')}" if data.get("source", "files") == "files"
              else f"the `datasets` dataset {data.get('name')} ({data.get('config')})"), ""]
    lines += ["## Test metrics", ""]
    if numbers:
        lines += ["| metric | value |", "|---|---:|"]
        lines += [f"| {label} | {numbers[k]:.4g} |" for k, label in CARD_ROWS if k in numbers]
    else:
        lines.append("Not evaluated: export from the run directory to carry its eval_test.json.")
    lines += ["", "## How it was made", ""]
    lines += ["```bash", command, "```"] if command else ["The training command was not recorded."]
    lines += ["", "## Training config", "", "```yaml",
              yaml.safe_dump(config, sort_keys=False).rstrip(), "```", ""]
    (folder / "README.md").write_text("\n".join(lines))


def readable(folder: Path) -> None:
    """Every file of `folder` with the mode a plain write would give it (0644 under the usual
    umask): safetensors writes its file 0600."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)
