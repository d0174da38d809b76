"""Training throughput and peak memory of a model on real batches.

    python scripts/benchmark.py                      # the ptb experiment's model, batch 32
    python scripts/benchmark.py +experiment=ptb_large train.batch_size=64 --steps 300
    python scripts/benchmark.py +experiment=ptb_transformer    # any experiment, any decoder

Composes the real Hydra config (any overrides), builds the model and optimizer exactly as
`vae_text.train` does, runs `--warmup` untimed steps then `--steps` timed training steps on
length-grouped training batches, and prints tokens/s (words + <eos>, the tokens the loss scores)
and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from vae_text.batches import batch_plan, iterate
from vae_text.config import TrainRunConfig, register
from vae_text.trainer import Trainer

CONF = Path(__file__).resolve().parents[1] / "conf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", default=["+experiment=ptb"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()

    register()  # the schemas conf/ is composed on
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", overrides=args.overrides)
    settings = TrainRunConfig.from_cfg(cfg)
    if settings.train.num_threads:
        torch.set_num_threads(settings.train.num_threads)
    trainer = Trainer(cfg, settings, run_dir=Path("/nonexistent"))  # nothing is written
    split = trainer.corpus["train"]  # tokenized with the configured tokenizer, as training does
    plan = batch_plan(split, settings.train.batch_size, shuffle=True, seed=settings.seed,
                      pool=settings.data.bucket_pool)
    trainer.plan = plan  # the aggressive inner loop draws its batches from it
    batches = iterate(split, plan)

    for _ in range(args.warmup):
        trainer.train_step(next(batches))
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    tokens, started = 0, time.perf_counter()
    for _ in range(args.steps):
        tokens += trainer.train_step(next(batches))["tokens"]
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started

    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"overrides: {' '.join(args.overrides)}")
    print(f"machine: {platform.machine()} {platform.processor() or ''} | device {trainer.device} | "
          f"torch {torch.__version__} | threads {torch.get_num_threads()}")
    # other processes slow the figures down: say how busy the machine was (1-minute average)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"batch {settings.train.batch_size} | {args.steps} steps | {tokens} tokens | {seconds:.2f} s")
    print(f"train tokens/s: {tokens / seconds:,.0f}")
    print(f"sentences/s:    {args.steps * settings.train.batch_size / seconds:,.1f}")
    print(f"peak RSS:       {peak_kib / 1024:,.0f} MiB")
    if trainer.device.type == "cuda":
        print(f"peak CUDA mem:  {torch.cuda.max_memory_allocated() / 2**20:,.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
