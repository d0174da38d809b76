"""A trained model as a Python object: encode, decode, sample, reconstruct, interpolate.

    from vae_text.pipeline import TextVAEPipeline
    vae = TextVAEPipeline.load("outputs/2026-11-24/19-00-00")       # run dir, .pt or export folder
    vae.sample(5, decoding="top_p", seed=0)
    vae.reconstruct(["the company said it expects to report a loss"])
    vae.interpolate("the stock fell", "the bank raised its rates", steps=5, method="slerp")
    vae.export("exports/ptb_vae")              # config.json + safetensors + vocab (+ tokenizer.model)
    TextVAEPipeline.from_pretrained("exports/ptb_vae")     # or "<user>/<repo>" on the hub
    vae.push_to_hub("<user>/<repo>")                       # huggingface_hub's ModelHubMixin

No Hydra needed. Sentences are split on whitespace, then tokenized with the model's own tokenizer
(words or sentencepiece): give them as the training data was written (PTB: lower case, numbers as
N); unknown words become <unk>.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from vae_text.core.errors import CheckpointError, ConfigError
from vae_text.core.utils import atomic_write, pick_device, write_json
from vae_text.data.batches import collate
from vae_text.data.corpus import encode_split
from vae_text.data.locate import Loaded, is_export, resolve_data
from vae_text.data.tokenizer import SentencePieceTokenizer, Tokenizer, Vocab
from vae_text.model.decoding import DecodeConfig, decode
from vae_text.model.latent import Posterior
from vae_text.model.textvae import TextVAE, build_model
from vae_text.run.checkpoint import (
    CHECKPOINT_DIR,
    check_finite_weights,
    load_model,
    resolve_checkpoint,
    short_reason,
)
from vae_text.run.hub import HubMixin
from vae_text.run.parts import saved_model

EXPORT_FORMAT = "vae_text-export-v1"


class TextVAEPipeline(HubMixin):  # push_to_hub, save_pretrained, from_pretrained: vae_text.run.hub
    def __init__(self, model: TextVAE, tokenizer: Tokenizer, config: dict):
        self.model, self.tokenizer, self.config = model.eval(), tokenizer, config
        self.device = next(model.parameters()).device
        self.home: Path | None = None  # the run directory or export folder it was loaded from

    # --- loading and sharing --------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, device: str = "auto",
             num_threads: int | None = None) -> TextVAEPipeline:
        """From a run directory (its best.pt), a checkpoint file, or an exported folder;
        `num_threads` sets torch's CPU threads (None: PyTorch's default)."""
        if num_threads:
            torch.set_num_threads(num_threads)
        loaded = load_any(path, pick_device(device))
        pipe = cls(loaded.model, loaded.tokenizer, loaded.config)
        pipe.home = loaded.home
        return pipe

    def export(self, folder: str | Path) -> Path:
        """A folder to share: config.json (the training config), model.safetensors, vocab.json
        (and tokenizer.model for a sentencepiece model), and its model card: README.md and
        metrics.json (vae_text.run.card)."""
        from safetensors.torch import save

        from vae_text.run.card import readable, write_card

        folder = Path(folder)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        atomic_write(folder / "model.safetensors", save(state))
        atomic_write(folder / "vocab.json", json.dumps(self.tokenizer.itos, ensure_ascii=False))
        if isinstance(self.tokenizer, SentencePieceTokenizer):
            self.tokenizer.save(folder / "tokenizer.model")
        write_json(folder / "config.json", {"format": EXPORT_FORMAT, **self.config})
        write_card(folder, self.config, len(self.tokenizer), self.home)
        readable(folder)
        return folder

    @classmethod
    def load_export(cls, folder: str | Path, device: str = "auto") -> TextVAEPipeline:
        """From an export folder (`from_pretrained` takes a hub repository id too)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder, device = Path(folder), pick_device(device)
        for name in ("config.json", "model.safetensors", "vocab.json"):
            if not (folder / name).is_file():
                raise CheckpointError(f"{folder}: missing {name}; an export folder holds "
                                      f"config.json, model.safetensors and vocab.json")
        try:
            config = json.loads((folder / "config.json").read_text())
            itos = json.loads((folder / "vocab.json").read_text())
            state = load_file(str(folder / "model.safetensors"), device=str(device))
        except (json.JSONDecodeError, SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{folder}: unreadable export ({short_reason(str(err))}); "
                                  f"export the model again") from None
        if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
            raise CheckpointError(f"{folder}/config.json: not a {EXPORT_FORMAT} folder")
        if not isinstance(config.get("model"), dict):
            raise CheckpointError(f"{folder}/config.json: no `model` section (the model config); "
                                  f"export the model again")
        if not isinstance(itos, list) or not all(isinstance(w, str) for w in itos):
            raise CheckpointError(f"{folder}/vocab.json: not a list of tokens (id -> token); "
                                  f"export the model again")
        check_finite_weights(state, folder / "model.safetensors")
        tokenizer = _export_tokenizer(folder, itos)
        try:
            model_cfg = saved_model(config)  # the run's plugins imported first
        except ConfigError as err:
            raise CheckpointError(f"{folder}/config.json: its model config is invalid: {err}") from None
        model = build_model(model_cfg, tokenizer)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise CheckpointError(f"{folder}: the weights do not match config.json and vocab.json "
                                  f"({short_reason(str(err).splitlines()[0])})") from None
        config = {k: v for k, v in config.items() if k != "format"}
        pipe = cls(model.to(device), tokenizer, config)
        pipe.home = folder
        return pipe

    def sentences(self, split: str = "test") -> list[str]:
        """A split of the corpus the model was trained on (files or `datasets`), one string each."""
        from vae_text.config import DataConfig
        from vae_text.data.text import read_split

        data = resolve_data(DataConfig.from_saved(self.config["data"]), self.home)
        return [" ".join(words) for words in read_split(data, split)[0]]

    # --- the latent space -----------------------------------------------------------------------

    def _batch(self, sentences: list[str]):
        words = [s.split() for s in sentences]
        return collate(encode_split(words, self.tokenizer), torch.arange(len(words))).to(self.device)

    @torch.no_grad()
    def encode(self, sentences: list[str]) -> Posterior:
        """The posterior q(z|x) of each sentence, in the order given (`.mean` (N, Z); for the
        Gaussian `.mu` and `.logvar`; `.rsample()`, `.log_prob(z)`, `.kl(prior)`)."""
        self._need_latent()
        batch = self._batch(sentences)
        return self.model.encode(batch.tokens, batch.lengths)

    def decode(self, z: Tensor, decoding: str | DecodeConfig = "greedy", seed: int | None = None,
               **options) -> list[str]:
        """Sentences from latent codes z (N, Z); `options` go to DecodeConfig (max_len, top_p...)."""
        cfg = decoding if isinstance(decoding, DecodeConfig) else DecodeConfig(decoding, **options)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        ids = decode(self.model, z.to(self.device), cfg, generator)
        return [" ".join(self.tokenizer.decode(s)) for s in ids]

    def sample(self, n: int, decoding: str | DecodeConfig = "greedy", seed: int | None = None,
               **options) -> list[str]:
        """n sentences with z drawn from the prior p(z) (the LM baseline: from the decoder)."""
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        if not self.model.has_latent:
            cfg = decoding if isinstance(decoding, DecodeConfig) else DecodeConfig(decoding, **options)
            ids = decode(self.model, None, cfg, generator, batch_size=n)
            return [" ".join(self.tokenizer.decode(s)) for s in ids]
        z = self.model.prior.sample(n, generator)
        return self.decode(z, decoding, None if seed is None else seed + 1, **options)

    def reconstruct(self, sentences: list[str], from_mean: bool = True,
                    decoding: str | DecodeConfig = "greedy", seed: int | None = None,
                    **options) -> list[str]:
        """Decode each sentence's posterior mean (or a posterior sample)."""
        q = self.encode(sentences)
        z = q.mean
        if not from_mean:
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
            z = q.rsample(generator=generator)
        return self.decode(z, decoding, seed, **options)

    def interpolate(self, a: str, b: str, steps: int = 5, method: str = "linear",
                    decoding: str | DecodeConfig = "greedy", seed: int | None = None,
                    **options) -> list[tuple[float, str]]:
        """Decode `steps` points between the posterior means of a and b (endpoints included)."""
        mu = self.encode([a, b]).mean
        ts = torch.linspace(0, 1, steps)
        z = torch.stack([interpolate(mu[0], mu[1], float(t), method) for t in ts])
        return list(zip(ts.tolist(), self.decode(z, decoding, seed, **options)))

    def _need_latent(self) -> None:
        if not self.model.has_latent:
            raise ValueError("this is a language model (model.kind=lm): it has no latent space")


def interpolate(a: Tensor, b: Tensor, t: float, method: str = "linear") -> Tensor:
    """The point at t in [0, 1] between a and b: straight line, or spherical (slerp)."""
    if method == "linear":
        return (1 - t) * a + t * b
    if method != "slerp":
        raise ValueError(f"interpolation {method!r} is unknown: linear or slerp")
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if float(omega) < 1e-6:  # (nearly) the same direction: slerp is the straight line
        return (1 - t) * a + t * b
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


__all__ = ["TextVAEPipeline", "interpolate"]


def _export_tokenizer(folder: Path, itos: list[str]) -> Tokenizer:
    """The export's tokenizer: words from vocab.json, or tokenizer.model checked against it."""
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
                              f"({len(itos)} entries) the model was trained with; export the model again")
    return tokenizer


def load_any(path: str | Path, device: torch.device | str = "cpu") -> Loaded:
    """A run directory (its best.pt), a checkpoint file, or an export folder."""
    path = Path(path)
    if is_export(path):
        pipe = TextVAEPipeline.load_export(path, device)
        return Loaded(pipe.model, pipe.tokenizer, pipe.config, path, path)
    file = resolve_checkpoint(path)
    model, tokenizer, config = load_model(file, device)
    home = file.parent.parent if file.parent.name == CHECKPOINT_DIR else file.parent
    return Loaded(model, tokenizer, config, home, file)
