"""Checkpoints that describe themselves: weights, resolved config, vocabulary, training state.

Written atomically (temp file in the same folder, then rename) so a crash never leaves a torn
file, and read with `weights_only=True` so loading one never runs code from it.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from vae_text.errors import CheckpointError
from vae_text.utils import atomic_write

CHECKPOINT_DIR = "checkpoints"


def save_checkpoint(path: Path, blob: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save(blob, f))


def resolve_checkpoint(path: str | Path, name: str = "best.pt") -> Path:
    """A checkpoint file, or `<run dir>/checkpoints/<name>` when given a run directory."""
    path = Path(path)
    if path.is_dir():
        candidate = path / CHECKPOINT_DIR / name
        if not candidate.is_file():
            raise CheckpointError(f"{path}: no {CHECKPOINT_DIR}/{name} in this run directory; "
                                  f"pass a checkpoint file or a run directory that holds one")
        return candidate
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; pass a .pt file or a run directory")
    return path


def load_checkpoint(path: str | Path, name: str = "best.pt",
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = resolve_checkpoint(path, name)
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise CheckpointError(f"{path}: not a readable vae_text checkpoint ({reason}); "
                              f"it may be truncated or corrupt: use another one") from None
    missing = {"model", "config", "vocab"} - set(blob) if isinstance(blob, dict) else {"model"}
    if missing:
        raise CheckpointError(f"{path}: not a vae_text checkpoint (missing {sorted(missing)})")
    return blob


def load_model(path: str | Path, device: str | torch.device = "cpu", name: str = "best.pt"):
    """(model, tokenizer, config) from a run directory or checkpoint file, in eval mode, no Hydra."""
    from vae_text.config import ModelConfig, section
    from vae_text.model import TextVAE
    from vae_text.tokenizer import tokenizer_from_state

    path = resolve_checkpoint(path, name)
    blob = load_checkpoint(path, map_location="cpu")
    tok = tokenizer_from_state(blob["vocab"], blob.get("tokenizer"), str(path))
    model = TextVAE(section(ModelConfig, blob["config"]["model"], "model"), len(tok),
                    tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id)
    try:
        model.load_state_dict(blob["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: its weights do not fit its own model config "
                              f"({str(err).splitlines()[0][:120]})") from None
    return model.to(device).eval(), tok, blob["config"]
