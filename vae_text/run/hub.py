"""Sharing through the Hugging Face hub with huggingface_hub's ModelHubMixin.

    vae = TextVAEPipeline.load("outputs/ptb_main")
    vae.push_to_hub("<user>/ptb-vae")                # an export folder (model card included), uploaded
    TextVAEPipeline.from_pretrained("<user>/ptb-vae")  # downloaded (and cached) by huggingface_hub

`save_pretrained(folder)` writes the same folder as `export(folder)`; `from_pretrained` takes an
export folder or a hub repository id. All hub traffic goes through huggingface_hub
(`push_to_hub` -> `upload_folder`, `from_pretrained` -> `snapshot_download`): its token, cache,
`HF_ENDPOINT` and `HF_HUB_OFFLINE` apply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import ModelHubMixin


class HubMixin(
    ModelHubMixin,
    library_name="vae_text",
    license="mit",
    tags=["text-generation", "variational-autoencoder", "pytorch"],
):
    def _save_pretrained(self, save_directory: Path) -> None:
        self.export(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, device: str = "auto", *,
                        force_download: bool = False, token: str | bool | None = None,
                        cache_dir: str | Path | None = None, local_files_only: bool = False,
                        revision: str | None = None, **model_kwargs: Any):
        """An export folder, or a hub repository id (`<user>/<repo>`) fetched into the
        huggingface_hub cache."""
        return cls._from_pretrained(
            model_id=str(pretrained_model_name_or_path), revision=revision, cache_dir=cache_dir,
            force_download=force_download, local_files_only=local_files_only, token=token,
            device=device, **model_kwargs)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir: str | Path | None,
                         force_download: bool, local_files_only: bool, token: str | bool | None,
                         device: str = "auto", **model_kwargs: Any):
        folder = Path(model_id)
        if not folder.is_dir():
            folder = Path(_download(model_id, revision, cache_dir, force_download,
                                    local_files_only, token))
        return cls.load_export(folder, device)


def _download(repo_id: str, revision, cache_dir, force_download, local_files_only, token) -> str:
    """The repository's files in the huggingface_hub cache; a one-line error if it is not there."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    from vae_text.core.errors import CheckpointError

    try:
        return snapshot_download(repo_id=repo_id, revision=revision, cache_dir=cache_dir,
                                 force_download=force_download, local_files_only=local_files_only,
                                 token=token)
    except HFValidationError:
        raise CheckpointError(f"{repo_id}: neither an export folder nor a hub repository id "
                              f"(<user>/<repo>)") from None
    except (LocalEntryNotFoundError, OSError) as err:
        raise CheckpointError(f"{repo_id}: not an export folder, and the hub could not provide it "
                              f"({str(err).splitlines()[0][:160]})") from None
