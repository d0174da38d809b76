"""Evaluate a trained model on a split with the field's protocol (docs/protocol.md).

    python -m vae_text.evaluate checkpoint=outputs/ptb_main split=test iw_samples=500
    python -m vae_text.evaluate checkpoint=exports/ptb_vae max_sentences=200 iw_samples=50

Prints a table and writes `eval_<split>_k<K>.json` into the run directory (or export folder; the
training run's own `eval_test.json` is never touched; an existing file needs overwrite=true). Works for VAEs (IW-NLL, MI,
AU, reconstructions), the language-model baseline (exact NLL) and the deterministic autoencoder
(rec, MI, AU, reconstructions; z = mu bounds no likelihood, so no IW-NLL) alike.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from vae_text.config import DataConfig, EvaluateConfig, section
from vae_text.core import plugins
from vae_text.core.errors import CheckpointError, ConfigError
from vae_text.core.utils import CONFIG_PATH, check_writable, cli, pick_device, write_json
from vae_text.data.corpus import encode_split
from vae_text.data.locate import resolve_data
from vae_text.data.text import read_split
from vae_text.metrics import METRICS, Row, evaluate
from vae_text.metrics.iw import readout_line
from vae_text.metrics.progress import progress_file
from vae_text.run.command import hydra_entry
from vae_text.run.hub import load_any
from vae_text.run.parts import check_eval

log = logging.getLogger("vae_text")

RUN_ROWS = [  # what the suite and this command add to the metrics' own rows (vae_text.metrics)
    Row("sentences", "sentences", "d"), Row("tokens", "tokens (words + <eos>)", "d"),
    Row("model_tokens", "model tokens (<eos> included)", "d"), Row("seconds", "wall time (s)", ".1f"),
    Row("peak_rss_mb", "peak RSS (MiB)", "d"),
]


def format_table(metrics: dict, title: str) -> str:
    """Each registered metric's rows (its own labels and formats), then the run's."""
    cells = [cell for cls in METRICS.values() for cell in cls.table(metrics)]
    cells += [(r.label, format(metrics[r.key], r.fmt)) for r in RUN_ROWS if r.key in metrics]
    return "\n".join([f"| {title} | |", "|---|---:|"] + [f"| {label} | {text} |" for label, text in cells])


def run(cfg: DictConfig | EvaluateConfig) -> dict:
    if not isinstance(cfg, EvaluateConfig):
        cfg = section(EvaluateConfig, cfg, "")  # an EvaluateConfig is the suite's EvalConfig too
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    plugins.load(cfg.plugins)  # its own plugins; the run's come with its checkpoint
    loaded = load_any(cfg.checkpoint, pick_device(str(cfg.device)))  # run dir, .pt or export
    check_eval(cfg)  # the names (a metric of the run's plugins too), before any work
    path, model, tokenizer = loaded.source, loaded.model, loaded.tokenizer
    if not isinstance(loaded.config.get("data"), dict):  # an export of a model built in Python
        raise CheckpointError(f"{path}: its saved config has no `data` section, so the data it "
                              f"was trained on is unknown: evaluate a training run's checkpoint")
    data = DataConfig.from_saved(loaded.config["data"])
    if cfg.data_dir:
        data = dataclasses.replace(data, dir=cfg.data_dir)
    data = resolve_data(data, loaded.home)  # found beside the run, or fetchable; else one line
    out = Path(cfg.output) if cfg.output else loaded.home / output_name(cfg)
    if out.exists() and not cfg.overwrite:
        raise ConfigError(f"{out} exists: pass overwrite=true to replace it, or output=<file>")
    check_writable(out.parent)  # before the work, not after it
    sentences, _, where = read_split(data, cfg.split)  # every sentence: no max_len here
    if cfg.max_sentences:
        sentences = sentences[: cfg.max_sentences]
    split = encode_split(sentences, tokenizer)  # the checkpoint's own tokenizer
    log.info("evaluating %s on %s (%d sentences, K=%d)", path, where, len(split), cfg.iw_samples)
    progress = progress_file(out)  # an interrupted evaluation resumes its IW-NLL from here
    metrics = evaluate(model, split, tokenizer, cfg, progress=progress)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    metrics.update(checkpoint=str(path), split=cfg.split, data=where,
                   peak_rss_mb=round(peak_kib / 1024), threads=torch.get_num_threads())
    if cfg.generation:
        metrics["generation"] = generation_part(model, tokenizer, data, cfg)
    write_json(out, metrics)
    progress.unlink(missing_ok=True)
    print(format_table(metrics, f"{path} · {cfg.split}"))
    if "readout_gflops" in metrics:  # how well the IW pass filled the device
        print(readout_line(metrics))
    print(f"wrote {out}")
    return metrics


def generation_part(model, tokenizer, data: DataConfig, cfg: EvaluateConfig) -> dict:
    """`generation=true`: the generation suite (vae_text.generation.suite), printed and returned."""
    from vae_text.generation.suite import format_generation, generation_suite

    what = "prior samples" if cfg.gen.source == "model" else "training sentences (gen.source=data)"
    log.info("generation suite: %d %s, reverse PPL, diversity, probes", cfg.gen.samples, what)
    gen = generation_suite(model, tokenizer, data, cfg.split, cfg.gen)
    print(format_generation(gen))
    return gen


def output_name(cfg: EvaluateConfig) -> str:
    """eval_<split>_k<K>[_n<N>].json: never the training run's own eval_test.json."""
    return (f"eval_{cfg.split}_k{cfg.iw_samples}"
            f"{f'_n{cfg.max_sentences}' if cfg.max_sentences else ''}.json")


@hydra_entry
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="evaluate")
@cli
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
