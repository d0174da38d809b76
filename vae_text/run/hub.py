"""A trained model as a folder to share, on the Hugging Face hub's conventions (huggingface_hub's
ModelHubMixin): `save_pretrained`, `from_pretrained`, `push_to_hub`.

    vae = TextVAEPipeline.from_pretrained("outputs/ptb_main")   # a run directory, .pt or folder
    vae.save_pretrained("exports/ptb_vae")                       # the folder below
    vae.push_to_hub("<user>/ptb-vae")                            # the same folder, uploaded
    TextVAEPipeline.from_pretrained("<user>/ptb-vae")            # fetched into the hub cache

The folder: `config.json` (the training config, from which the model rebuilds with no flags),
`model.safetensors` (the weights; loading them runs no pickle), `vocab.json` (and
`tokenizer.model` for sentencepiece), the model card `README.md` (vae_text.run.card) and
`metrics.json`. A folder that holds anything is refused unless `overwrite=True`, which replaces it
whole: an old `eval_*.json` never stays beside new weights. All hub traffic goes through
huggingface_hub, so its token, cache, `HF_ENDPOINT` and `HF_HUB_OFFLINE` apply.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelHubMixin

from vae_text.core.errors import CheckpointError, OutputError
from vae_text.core.utils import atomic_write, error_line, pick_device, short_reason, write_json
from vae_text.data.locate import Loaded, is_export
from vae_text.data.tokenizer import SentencePieceTokenizer, Tokenizer, Vocab
from vae_text.model.textvae import build_model
from vae_text.run import card
from vae_text.run.checkpoint import (
    CHECKPOINT_DIR,
    check_finite_weights,
    load_model,
    resolve_checkpoint,
)
from vae_text.run.parts import saved_model

FORMAT = "vae_text-export-v1"  # config.json's `format`: what reads this folder
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(?<!\.pt)")  # <user>/<repo>, not a local path


class HubMixin(ModelHubMixin, library_name="vae_text", license="mit",
               tags=["text-generation", "variational-autoencoder", "pytorch"]):
    """save_pretrained / from_pretrained / push_to_hub for a class built as cls(model, tokenizer,
    config) with a `home` (the run directory or folder it was loaded from)."""

    model: Any
    tokenizer: Tokenizer
    config: dict
    home: Path | None

    def save_pretrained(self, save_directory: str | Path, *, overwrite: bool = False,
                        repo_id: str | None = None) -> Path:
        """Write the folder (written beside it first, then moved in place); `repo_id` is what
        the card's snippet loads (default: this folder's absolute path). Returns the folder."""
        folder = Path(save_directory)
        _check_target(folder, overwrite)
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        except OSError as err:
            raise OutputError(f"{folder}: cannot write beside it ({error_line(err, 160)})") from None
        try:
            record = card.record(self.home)  # metrics.json, and the card's metrics and command
            super().save_pretrained(staging, model_card_kwargs={
                "model_id": repo_id or str(folder.resolve()), "name": repo_id or folder.name,
                "record": record})
            write_json(staging / "metrics.json", record)
            card.readable(staging)
            if folder.exists():
                shutil.rmtree(folder)
            staging.rename(folder)
        except OSError as err:
            raise OutputError(f"{folder}: {error_line(err, 160)}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder

    def _save_pretrained(self, save_directory: Path) -> None:
        """The mixin's hook: weights, tokenizer and config.json (save_pretrained adds the card's
        metrics.json)."""
        from safetensors.torch import save

        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        atomic_write(save_directory / "model.safetensors", save(state))
        atomic_write(save_directory / "vocab.json", json.dumps(self.tokenizer.itos, ensure_ascii=False))
        if isinstance(self.tokenizer, SentencePieceTokenizer):
            self.tokenizer.save(save_directory / "tokenizer.model")
        write_json(save_directory / "config.json", {"format": FORMAT, **self.config})

    def generate_model_card(self, model_id: str, name: str, record: dict | None = None) -> ModelCard:
        """The mixin's hook: README.md with license, data, the training command and the test
        metrics as `model-index` entries (vae_text.run.card); `record`: card.record(self.home)."""
        return card.build_card(self._hub_mixin_info.model_card_data, self.config, len(self.tokenizer),
                               card.record(self.home) if record is None else record, model_id, name)

    def push_to_hub(self, repo_id: str, *, commit_message: str = "Upload a vae_text model",
                    private: bool | None = None, token: str | None = None,
                    branch: str | None = None, create_pr: bool = False,
                    keep_other_files: bool = False) -> str:
        """Upload the save_pretrained folder to `repo_id` (created if absent) in one commit; the
        repository's other files are deleted in that commit unless `keep_other_files`, so an old
        evaluation never stays beside new weights there either. Returns the commit's url."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
                folder = self.save_pretrained(Path(tmp) / repo_id.split("/")[-1], repo_id=repo_id)
                return str(api.upload_folder(
                    repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                    revision=branch, create_pr=create_pr,
                    delete_patterns=None if keep_other_files else "*"))
        except (OSError, ValueError) as err:  # hub errors are OSErrors (HTTP, offline, no token)
            raise OutputError(f"push_to_hub {repo_id}: {error_line(err, 160)}") from None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, device: str = "auto",
                        num_threads: int | None = None, *, force_download: bool = False,
                        token: str | bool | None = None, cache_dir: str | Path | None = None,
                        local_files_only: bool = False, revision: str | None = None):
        """A save_pretrained folder, a run directory (its best.pt), a checkpoint file, or a hub
        repository id (`<user>/<repo>`) fetched into the huggingface_hub cache; `num_threads`
        sets torch's CPU threads (None: PyTorch's default)."""
        if num_threads:
            torch.set_num_threads(num_threads)
        return cls._from_pretrained(
            model_id=str(pretrained_model_name_or_path), revision=revision, cache_dir=cache_dir,
            force_download=force_download, local_files_only=local_files_only, token=token,
            device=device)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None,
                         cache_dir: str | Path | None, force_download: bool,
                         local_files_only: bool, token: str | bool | None, device: str = "auto"):
        path, device = Path(model_id), pick_device(device)
        if path.exists() or not REPO_ID.fullmatch(model_id):  # a path: its own one-line error
            loaded = load_any(path, device)
        else:
            loaded = read_folder(Path(_download(model_id, revision, cache_dir, force_download,
                                                local_files_only, token)), device)
        pipe = cls(loaded.model, loaded.tokenizer, loaded.config)
        pipe.home = loaded.home
        return pipe


def load_any(path: str | Path, device: torch.device | str = "cpu") -> Loaded:
    """A run directory (its best.pt), a checkpoint file, or a save_pretrained folder."""
    path = Path(path)
    if is_export(path):
        return read_folder(path, device)
    file = resolve_checkpoint(path)
    model, tokenizer, config = load_model(file, device)
    home = file.parent.parent if file.parent.name == CHECKPOINT_DIR else file.parent
    return Loaded(model, tokenizer, config, home, file)


def read_folder(folder: Path, device: torch.device | str) -> Loaded:
    """The model of a save_pretrained folder: JSON and safetensors only, so no pickle runs."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    for name in ("config.json", "model.safetensors", "vocab.json"):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder}: missing {name}; a save_pretrained folder holds "
                                  f"config.json, model.safetensors and vocab.json")
    try:
        config = json.loads((folder / "config.json").read_text())
        itos = json.loads((folder / "vocab.json").read_text())
        state = load_file(str(folder / "model.safetensors"), device=str(device))
    except (json.JSONDecodeError, SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{folder}: unreadable model folder ({short_reason(str(err))}); "
                              f"save it again") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{folder}/config.json: not a {FORMAT} folder")
    if not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{folder}/config.json: no `model` section (the model config); "
                              f"save the model again")
    if not isinstance(itos, list) or not all(isinstance(w, str) for w in itos):
        raise CheckpointError(f"{folder}/vocab.json: not a list of tokens (id -> token); "
                              f"save the model again")
    check_finite_weights(state, folder / "model.safetensors")
    tokenizer = _folder_tokenizer(folder, itos)
    model = build_model(saved_model(config, folder / "config.json"), tokenizer)  # plugins first
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{folder}: the weights do not match config.json and vocab.json "
                              f"({error_line(err)})") from None
    config = {k: v for k, v in config.items() if k != "format"}
    return Loaded(model.to(device).eval(), tokenizer, config, folder, folder)


def _folder_tokenizer(folder: Path, itos: list[str]) -> Tokenizer:
    """Words from vocab.json, or tokenizer.model checked against it."""
    from vae_text.core.errors import DataError

    path = folder / "tokenizer.model"
    try:
        if not path.is_file():
            return Vocab(itos)
        tokenizer = SentencePieceTokenizer(path.read_bytes())
    except DataError as err:
        raise CheckpointError(f"{folder}: {err}") from None
    if tokenizer.itos != itos:
        raise CheckpointError(f"{path}: its {len(tokenizer)} pieces do not match vocab.json "
                              f"({len(itos)} entries) the model was trained with; save the model again")
    return tokenizer


def _check_target(folder: Path, overwrite: bool) -> None:
    """A save_pretrained target: absent or empty, or replaced whole when `overwrite`; never a
    run directory or a file."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise OutputError(f"{folder} is a file or a link, not a folder: give save_pretrained a "
                          f"folder path")
    if (folder / CHECKPOINT_DIR).is_dir() or (folder / "results.json").is_file():
        raise OutputError(f"{folder} is a run directory: save the model into a folder of its own")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise OutputError(f"{folder} is not empty: pass overwrite=True to replace it whole, or "
                          f"choose a new folder")


def _download(repo_id: str, revision, cache_dir, force_download, local_files_only, token) -> str:
    """The repository's files in the huggingface_hub cache; a one-line error if it is not there."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return snapshot_download(repo_id=repo_id, revision=revision, cache_dir=cache_dir,
                                 force_download=force_download, local_files_only=local_files_only,
                                 token=token)
    except HFValidationError:
        raise CheckpointError(f"{repo_id}: neither a model folder, run directory or checkpoint "
                              f"here, nor a hub repository id (<user>/<repo>)") from None
    except OSError as err:  # not in the cache and not fetched (offline, no such repo, no access)
        raise CheckpointError(f"{repo_id}: not a folder here, and the hub could not provide it "
                              f"({error_line(err, 160)})") from None
