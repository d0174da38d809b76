"""A trained model as a Python object: encode, decode, sample, reconstruct, interpolate.

    from vae_text.pipeline import TextVAEPipeline
    vae = TextVAEPipeline.from_pretrained("outputs/2026-11-24/19-00-00")  # run dir, .pt, folder
    vae.sample(5, decoding="top_p", seed=0)
    vae.reconstruct(["the company said it expects to report a loss"])
    vae.interpolate("the stock fell", "the bank raised its rates", steps=5, method="slerp")
    vae.save_pretrained("exports/ptb_vae")     # config.json, model.safetensors, vocab, model card
    TextVAEPipeline.from_pretrained("exports/ptb_vae")     # or "<user>/<repo>" on the hub
    vae.push_to_hub("<user>/<repo>")           # loading and sharing: vae_text.run.hub

No Hydra needed. Sentences are split on whitespace, then tokenized with the model's own tokenizer
(words or sentencepiece): give them as the training data was written (PTB: lower case, numbers as
N); unknown words become <unk>.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from vae_text.config import MAX_LEN
from vae_text.core.errors import DataError
from vae_text.data.batches import collate
from vae_text.data.corpus import encode_split
from vae_text.data.locate import resolve_data
from vae_text.data.tokenizer import Tokenizer
from vae_text.model.decoding import DecodeConfig, decode
from vae_text.model.latent import Posterior
from vae_text.model.textvae import TextVAE
from vae_text.run.hub import HubMixin


class TextVAEPipeline(HubMixin):  # from_pretrained, save_pretrained, push_to_hub: vae_text.run.hub
    def __init__(self, model: TextVAE, tokenizer: Tokenizer, config: dict):
        self.model, self.tokenizer, self.config = model.eval(), tokenizer, config
        self.device = next(model.parameters()).device
        self.home: Path | None = None  # the run directory or saved folder it was loaded from

    def sentences(self, split: str = "test") -> list[str]:
        """A split of the corpus the model was trained on (files or `datasets`), one string each."""
        from vae_text.config import DataConfig
        from vae_text.data.text import read_split

        data = resolve_data(DataConfig.from_saved(self.config["data"]), self.home)
        return [" ".join(words) for words in read_split(data, split)[0]]

    # --- the latent space -----------------------------------------------------------------------

    @property
    def max_words(self) -> int:
        """The longest sentence it reads: data.max_len it trained with, at least MAX_LEN (a longer
        one would make (rows, length, vocab) logits of many GB)."""
        return max(MAX_LEN, self.config.get("data", {}).get("max_len") or 0)

    def too_long(self, where: str, sentence: str) -> DataError | None:
        """The error for a sentence over `max_words`, naming `where` it came from; None if it fits."""
        n = len(sentence.split())
        if n <= self.max_words:
            return None
        return DataError(f"{where}: a sentence of {n} words; a model reads at most {self.max_words} "
                         f"words a sentence (data.max_len it trained with, or {MAX_LEN}): split or "
                         f"shorten it")

    def _batch(self, sentences: list[str]):
        for i, sentence in enumerate(sentences):
            if (err := self.too_long(f"sentence {i}", sentence)) is not None:
                raise err
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
