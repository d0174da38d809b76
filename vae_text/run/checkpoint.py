"""Checkpoints that describe themselves: weights, resolved config, vocabulary, training state.

Written atomically (temp file in the same folder, then rename) so a crash never leaves a torn
file, and read with `weights_only=True` so loading one never runs code from it.
"""

from __future__ import annotations

import errno
import math
import pickle
import random
import warnings
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from vae_text.config import ModelConfig
from vae_text.core.errors import CheckpointError
from vae_text.core.utils import ANSI, atomic_write, error_line, short_reason
from vae_text.run.optim import load_optimizer_state

CHECKPOINT_DIR = "checkpoints"


def save_checkpoint(path: Path, blob: dict[str, Any]) -> None:
    from vae_text.run.divergence import check_weights

    check_weights(path, blob)  # never replace the last good checkpoint with broken weights
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
    """A checkpoint's contents, checked to be what vae_text writes: a dict with the weights, a
    saved config with its `model` and `data` sections, and the vocabulary as a list of tokens."""
    path = resolve_checkpoint(path, name)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing a file
            warnings.simplefilter("ignore")
            blob = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" not in str(err):  # not a pickle torch.save wrote (a text file, a raw pickle)
            raise CheckpointError(f"{path}: not a readable vae_text checkpoint (not a file that "
                                  f"torch.save wrote); use another one") from None
        raise CheckpointError(f"{path}: refused: it holds Python objects that no vae_text "
                              f"checkpoint holds ({_unpickler_reason(str(err))}); it is not loaded: "
                              f"use another checkpoint") from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path}: not a readable vae_text checkpoint ({_load_reason(err)}); "
                              f"it may be truncated or corrupt: use another one") from None
    missing = {"model", "config", "vocab"} - set(blob) if isinstance(blob, dict) else {"model"}
    if missing:
        raise CheckpointError(f"{path}: not a vae_text checkpoint (missing {sorted(missing)})")
    check_contents(path, blob)
    return blob


def check_contents(path: Path, blob: dict[str, Any]) -> None:
    """The parts of a checkpoint that every reader relies on have the shape vae_text writes."""
    config = blob["config"]
    for section in ("model", "data"):
        if not isinstance(config, dict) or not isinstance(config.get(section), dict):
            raise CheckpointError(f"{path}: its saved config has no `{section}` section; it was "
                                  f"not written by vae_text's training or was altered: use another "
                                  f"checkpoint")
    vocab = blob["vocab"]
    if not isinstance(vocab, list) or not all(isinstance(w, str) for w in vocab):
        raise CheckpointError(f"{path}: its vocabulary is {type(vocab).__name__}, not a list of "
                              f"tokens; the checkpoint is damaged: use another one")
    if not isinstance(blob.get("tokenizer") or {}, dict):
        raise CheckpointError(f"{path}: its tokenizer state is {type(blob['tokenizer']).__name__}, "
                              f"not a mapping; the checkpoint is damaged: use another one")
    if not isinstance(blob["model"], dict) or \
            not all(isinstance(v, torch.Tensor) for v in blob["model"].values()):
        raise CheckpointError(f"{path}: its weights are not a mapping of tensor names to "
                              f"tensors; the checkpoint is damaged: use another one")


def check_finite_weights(state: dict[str, torch.Tensor], where: str | Path) -> None:
    """Weights with NaN or infinite values give NaN metrics and empty samples: refused."""
    from vae_text.run.divergence import first_nonfinite

    bad = first_nonfinite(state)
    if bad is not None:
        raise CheckpointError(f"{where}: weight {bad!r} has NaN or infinite values; the model "
                              f"cannot be evaluated or sampled: use an earlier checkpoint")


def _load_reason(err: BaseException) -> str:
    """What torch found wrong with a file, in a few words (its advice left out)."""
    if isinstance(err, EOFError):
        return "the file is empty or ends early"
    if isinstance(err, KeyError):
        return "not a file that torch.save wrote"
    if isinstance(err, OSError) and err.errno == errno.EINVAL:  # torch's archive reader on a cut file
        return "not a complete torch archive"
    text = ANSI.sub("", str(err)).strip()
    if not text:
        return type(err).__name__
    first = text.splitlines()[0]
    return short_reason(first.split(". ")[0])  # the finding, not torch's explanation after it


def _unpickler_reason(message: str) -> str:
    """The object torch's safe loader refused, in its first sentence: not torch's advice on how
    the file could be loaded anyway."""
    lines = [line.strip() for line in ANSI.sub("", message).splitlines()]
    marker = "WeightsUnpickler error:"
    at = next((i for i, line in enumerate(lines) if marker in line), None)
    if at is not None:
        found = [lines[at].split(marker, 1)[1].strip(), *lines[at + 1:]]
    else:
        advice = ("weights only load failed", "weights_only", "can still be loaded", "trusted",
                  "file an issue", "documentation of torch.load")
        found = [line for line in lines if not any(a in line.lower() for a in advice)]
    reason = next((line for line in found if line), "an object the safe loader does not allow")
    return short_reason(reason.split(". ")[0]).rstrip(".")


def read_resume(path: str | Path, model: ModelConfig, optim=None, objective=None) -> dict[str, Any]:
    """The last.pt a run continues from, checked against the model (and optim, objective)
    config of now."""
    blob = load_checkpoint(path, name="last.pt")
    check_resumable(blob, model, f"train.resume={path}")
    if optim is not None:
        check_same_optim(blob, optim, f"train.resume={path}")
    if objective is not None:
        check_same_objective(blob, objective.name, f"train.resume={path}")
    return blob


def check_same_objective(blob: dict[str, Any], name: str, where: str) -> None:
    """A run goes on with the objective it was trained with (a checkpoint from before the
    objectives named theirs was trained with the ELBO)."""
    was = blob["config"].get("objective", {}).get("name", "elbo")
    if was != name:
        raise CheckpointError(f"{where}: the checkpoint was trained with objective={was} but "
                              f"objective={name} now; resume with objective={was}, or start a new run")


def training_blob(trainer, full: bool) -> dict[str, Any]:
    """What a trainer's checkpoint holds: weights, the resolved config, the tokenizer, the loop,
    remedy and objective states; with `full` (last.pt) also the optimizer, lr-plateau and RNG states."""
    from omegaconf import OmegaConf

    blob = {
        "model": trainer.model.state_dict(),
        "config": OmegaConf.to_container(trainer.cfg, resolve=True),
        "vocab": trainer.corpus.tokenizer.itos,
        "tokenizer": trainer.corpus.tokenizer.state(),
        "state": asdict(trainer.state),
        "remedies": {r.name: r.state_dict() for r in trainer.remedies},
        "objective": trainer.objective.state_dict(),  # a multiplier, a running estimate: exactly
    }
    if full:
        blob["optimizer"] = trainer.optimizer.state_dict()
        blob["plateau"] = trainer.plateau.state_dict() if trainer.plateau is not None else None
        blob["rng"] = rng_state()
        if getattr(trainer, "window", None) is not None:  # the train/ means a resumed run goes on with
            blob["window"] = vars(trainer.window).copy()
    if getattr(trainer, "logger", None) is not None:
        blob["metrics_lines"] = trainer.logger.lines  # metrics.jsonl as it stood (resume truncates to it)
    return blob


def restore(trainer, blob: dict[str, Any]) -> None:
    """Put a trainer back where `training_blob(trainer, full=True)` found it."""
    trainer.model.load_state_dict(blob["model"])
    load_optimizer_state(trainer.optimizer, blob["optimizer"])
    if trainer.plateau is not None and blob.get("plateau") is not None:
        trainer.plateau.load_state_dict(blob["plateau"])
    state, remedies = _upgrade(blob)
    check_same_remedies(set(remedies), [r.name for r in trainer.remedies],
                        f"train.resume={trainer.s.train.resume}")
    trainer.state = type(trainer.state)(**state)
    for remedy in trainer.remedies:
        remedy.load_state_dict(remedies[remedy.name])
    if "objective" in blob:  # older checkpoints: the objective's fresh state (the ELBO has none)
        trainer.objective.load_state_dict(blob["objective"])
    set_rng_state(blob["rng"])
    from vae_text.run.logger import TrainWindow

    trainer.window, trainer.resume_blob = TrainWindow(), blob
    vars(trainer.window).update(blob.get("window", {}))


def _upgrade(blob: dict[str, Any]) -> tuple[dict, dict]:
    """The loop and remedy states of a checkpoint; one written before remedies kept their own
    state (0.1.0: `pretraining`, `aggressive`, `best_mi` in the loop state) is read as today's."""
    state = dict(blob["state"])
    if "remedies" in blob:
        return state, blob["remedies"]
    pretraining, aggressive = state.pop("pretraining", False), state.pop("aggressive", False)
    best_mi = state.pop("best_mi", -math.inf)
    remedy = blob["config"].get("remedy", {})
    if state.get("phase_start", 0) > 0:  # its VAE phase began after the fixed pretraining epochs
        state["phase_epoch"] = remedy.get("pretrain_epochs", 0)
    states = {"pretrain": {"active": pretraining},
              "aggressive": {"active": aggressive, "best_mi": best_mi}}
    on = {"pretrain": remedy.get("pretrain_epochs", 0) > 0, "aggressive": remedy.get("aggressive")}
    return state, {name: s for name, s in states.items() if on[name]}


def check_same_remedies(saved: set[str], now: list[str], where: str) -> None:
    """A run goes on with the remedies it was trained with: their states are part of it."""
    added, dropped = sorted(set(now) - saved), sorted(saved - set(now))
    if added or dropped:
        change = ", ".join([f"{n} added" for n in added] + [f"{n} removed" for n in dropped])
        raise CheckpointError(f"{where}: the checkpoint's remedies are {sorted(saved) or 'none'} "
                              f"but {sorted(now) or 'none'} now ({change}); resume with the same "
                              f"remedy keys, or start a new run")


def check_resumable(blob: dict[str, Any], model: ModelConfig, where: str) -> None:
    """A training run continues only from a full checkpoint of the same model config."""
    if "optimizer" not in blob:
        raise CheckpointError(f"{where}: this checkpoint holds weights only; resume from a run's "
                              f"checkpoints/last.pt")
    saved = {**asdict(ModelConfig()), **blob["config"].get("model", {})}  # keys added since
    now = asdict(model)
    diff = sorted(k for k in now if saved.get(k) != now[k])
    if diff:
        raise CheckpointError(f"{where}: model.{diff[0]} is {saved.get(diff[0])!r} in the "
                              f"checkpoint but {now[diff[0]]!r} now; resume with the same model config")


OPTIMIZER_KEYS = ("name", "lr", "betas", "momentum", "weight_decay")  # held in the optimizer's state


def check_same_optim(blob: dict[str, Any], optim, where: str) -> None:
    """A resumed run goes on with the optimizer state of its checkpoint (its lr, betas, ...): an
    override of those keys would be recorded in config.yaml but not used, so it is refused."""
    saved = {**asdict(type(optim)()), **blob["config"].get("optim", {})}
    now = asdict(optim)
    for key in OPTIMIZER_KEYS:
        was, new = saved.get(key), now[key]
        if (list(was) if isinstance(was, (list, tuple)) else was) != \
                (list(new) if isinstance(new, tuple) else new):
            raise CheckpointError(f"{where}: optim.{key} is {was!r} in the checkpoint but {new!r} "
                                  f"now; a resumed run goes on with its optimizer's state: resume "
                                  f"with the same optim.{key}, or start a new run")


def rng_state() -> dict[str, Any]:
    """The random generators a resumed run must continue: torch (CPU, CUDA) and Python's."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))  # a checkpoint stores tuples as lists
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def load_model(path: str | Path, device: str | torch.device = "cpu", name: str = "best.pt"):
    """(model, tokenizer, config) from a run directory or checkpoint file, in eval mode, no Hydra."""
    from vae_text.data.tokenizer import tokenizer_from_state
    from vae_text.model.textvae import build_model
    from vae_text.run.parts import saved_model

    path = resolve_checkpoint(path, name)
    blob = load_checkpoint(path, map_location="cpu")
    check_finite_weights(blob["model"], path)
    tok = tokenizer_from_state(blob["vocab"], blob.get("tokenizer"), str(path))
    model = build_model(saved_model(blob["config"], path), tok)  # the run's plugins imported first
    try:
        model.load_state_dict(blob["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: its weights do not fit its own model config "
                              f"({error_line(err)})") from None
    return model.to(device).eval(), tok, blob["config"]
