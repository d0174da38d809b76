"""Sentences from a trained model: prior samples, reconstructions, interpolations.

    python -m vae_text.sample checkpoint=<run dir> n=10 decoding=top_p
    python -m vae_text.sample checkpoint=<run dir> mode=reconstruct file=my_sentences.txt
    python -m vae_text.sample checkpoint=<run dir> mode=interpolate 'sentences=["a b","c d"]'
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from vae_text.config import SampleConfig, section
from vae_text.core import plugins
from vae_text.core.errors import ConfigError
from vae_text.core.utils import CONFIG_PATH, cli
from vae_text.data.text import read_sentences
from vae_text.pipeline import TextVAEPipeline
from vae_text.run.command import hydra_entry


def run(cfg: DictConfig | SampleConfig) -> list[str]:
    if not isinstance(cfg, SampleConfig):
        cfg = section(SampleConfig, cfg, "")
    plugins.load(cfg.plugins)  # the run's own plugins come with its checkpoint (parts.saved_model)
    decoding = cfg  # a SampleConfig is the DecodeConfig of its decoding keys
    vae = TextVAEPipeline.from_pretrained(cfg.checkpoint, device=str(cfg.device), num_threads=cfg.num_threads)
    if cfg.mode == "sample":
        lines = vae.sample(int(cfg.n), decoding, seed=cfg.seed)
        return [f"{i + 1:3d}. {s}" for i, s in enumerate(lines)]
    sentences = list(cfg.sentences)
    if cfg.file:
        sentences += [" ".join(words) for words in read_sentences(Path(cfg.file))[0]]
    if cfg.mode == "reconstruct":
        if not sentences:
            raise ConfigError("mode=reconstruct needs sentences=[...] or file=<path>")
        out = vae.reconstruct(sentences, from_mean=cfg.from_mean, decoding=decoding, seed=cfg.seed)
        return [f"  {s}\n> {r}" for s, r in zip(sentences, out)]
    if len(sentences) != 2:
        raise ConfigError(f"mode=interpolate needs exactly two sentences, got {len(sentences)}")
    points = vae.interpolate(sentences[0], sentences[1], int(cfg.steps), cfg.interpolation,
                             decoding, seed=cfg.seed)
    return [f"{t:.2f}  {s}" for t, s in points]


@hydra_entry
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="sample")
@cli(also=(ValueError,))  # the pipeline's ValueErrors (no latent, unknown interpolation) are the user's
def main(cfg: DictConfig) -> None:
    print("\n".join(run(cfg)))


if __name__ == "__main__":
    main()
