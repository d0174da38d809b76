"""Sentences from a trained model: prior samples, reconstructions, interpolations.

    python -m vae_text.sample checkpoint=<run dir> n=10 decoding=top_p
    python -m vae_text.sample checkpoint=<run dir> mode=reconstruct file=my_sentences.txt
    python -m vae_text.sample checkpoint=<run dir> mode=interpolate 'sentences=["a b","c d"]'

The input sentences (sentences=[...] and the lines of file=) are split on whitespace; one longer
than the model reads (data.max_len it trained with, at least MAX_LEN = 200 words) is refused with
its place (`file:line`): a 1 MB line would otherwise be encoded whole, a transformer encoder's
attention alone taking tens of GB.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from vae_text.config import SampleConfig, section
from vae_text.core import plugins
from vae_text.core.errors import ConfigError, DataError
from vae_text.core.utils import CONFIG_PATH, cli
from vae_text.data.text import BOM, read_lines
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
    given = [(f"sentences[{i}]", s) for i, s in enumerate(cfg.sentences)]
    if cfg.file:
        lines = [line.removeprefix(BOM) for line in read_lines(Path(cfg.file))]
        given += [(f"{cfg.file}:{n}", line) for n, line in enumerate(lines, 1) if line.split()]
        if not any(line.split() for line in lines):
            raise DataError(f"{cfg.file}: holds no sentences; give one sentence per line")
    for where, sentence in given:
        if (err := vae.too_long(where, sentence)) is not None:
            raise err
    sentences = [" ".join(s.split()) for _, s in given]
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
