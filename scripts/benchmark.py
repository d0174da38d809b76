"""Training throughput and peak memory of a model on real batches, against a bare reference step.

    python scripts/benchmark.py                      # the ptb experiment's model, batch 32
    python scripts/benchmark.py +experiment=ptb_large train.batch_size=64 --steps 300
    python scripts/benchmark.py +experiment=ptb_transformer    # any experiment, any decoder
    python scripts/benchmark.py +experiment=ptb --profile 20   # torch.profiler table of 20 steps
    python scripts/benchmark.py +experiment=ptb train.compile=compile --no-bare  # compiled step

Composes the real Hydra config (any overrides), builds the model and optimizer exactly as
`vae_text.train` does, runs `--warmup` untimed steps then `--steps` timed training steps on
length-grouped training batches, and prints tokens/s (words + <eos>, the tokens the loss scores)
and the process's peak RSS.

Beside tokens/s it prints the host reads and operators per step (vae_text.run.hostreads: the
calls that would make the host wait for a GPU, counted on any device), for a step between two log
lines and for a log step (`train.log_every`), each counted on steps of their own after the timing.

Beside it, in the same process, runs a *bare* step of the same model: plain nn.Embedding /
nn.LSTM / nn.Linear modules of the same sizes (z into the decoder the same way, the same dropouts),
fixed-length batches of the training split's mean sentence length cut from its token stream (no
padding, no masks, no lengths), cross-entropy over every position, the KL in closed form, the same
gradient clipping and optimizer settings (torch's default Adam/SGD). The two alternate in blocks of
`--block` steps (A B B A ...), so a loaded or drifting machine slows both alike; each block's
tokens/s is recorded and the medians, and the median of the per-round ratios, are printed.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import resource
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch import Tensor, nn

from vae_text.config import ModelConfig
from vae_text.data.batches import batch_plan, iterate
from vae_text.run.hostreads import HostReads
from vae_text.run.logger import TrainWindow
from vae_text.run.loop import read_window
from vae_text.run.parts import register, train_settings
from vae_text.run.trainer import Trainer

CONF = Path(__file__).resolve().parents[1] / "conf"


class BareVAE(nn.Module):
    """The project's LSTM VAE (or LM, `kind=lm`) at the sizes of `m`, as a plain fixed-length model."""

    def __init__(self, vocab: int, m: ModelConfig):
        super().__init__()
        self.latent = m.latent_size if m.kind == "vae" else 0
        self.concat = self.latent > 0 and m.conditioning in ("concat", "both")
        self.init = self.latent > 0 and m.conditioning in ("init", "both")
        self.layers, self.hidden = m.decoder_layers, m.decoder_hidden
        if self.latent:
            self.enc_embed = nn.Embedding(vocab, m.embed_size)
            self.encoder = nn.LSTM(m.embed_size, m.encoder_hidden, m.encoder_layers,
                                   batch_first=True, bidirectional=m.bidirectional)
            self.head = nn.Linear(m.encoder_hidden * (2 if m.bidirectional else 1), 2 * self.latent)
        self.dec_embed = nn.Embedding(vocab, m.embed_size)
        self.decoder = nn.LSTM(m.embed_size + (self.latent if self.concat else 0), self.hidden,
                               self.layers, batch_first=True)
        self.init_state = nn.Linear(self.latent, 2 * self.layers * self.hidden) if self.init else None
        self.embed_dropout, self.output_dropout = nn.Dropout(m.embed_dropout), nn.Dropout(m.output_dropout)
        self.proj = nn.Linear(self.hidden, vocab)

    def forward(self, targets: Tensor, inputs: Tensor, beta: float) -> Tensor:
        """Mean over sentences of rec + beta * KL for targets (B, T) and decoder inputs (B, T)."""
        B = targets.shape[0]
        x = self.embed_dropout(self.dec_embed(inputs))  # (B, T, E)
        state, kl = None, targets.new_zeros((), dtype=torch.float)
        if self.latent:
            _, (h, _) = self.encoder(self.enc_embed(targets))
            features = h[-2:].transpose(0, 1).reshape(B, -1) if self.encoder.bidirectional else h[-1]
            mu, logvar = self.head(features).chunk(2, dim=-1)  # (B, Z)
            z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum()
            if self.concat:
                x = torch.cat([x, z[:, None].expand(-1, x.shape[1], -1)], dim=-1)
            if self.init:
                s = self.init_state(z).view(B, 2, self.layers, self.hidden)
                state = (torch.tanh(s[:, 0]).transpose(0, 1).contiguous(),
                         s[:, 1].transpose(0, 1).contiguous())
        h, _ = self.decoder(x, state)  # (B, T, H)
        logits = self.proj(self.output_dropout(h))  # (B, T, V)
        rec = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
        return (rec + beta * kl) / B


class BareStep:
    """One optimizer step of `BareVAE` on fixed-length batches cut from the split's token stream."""

    def __init__(self, trainer: Trainer, split):
        s = trainer.s
        torch.manual_seed(s.seed)
        vocab = len(trainer.corpus.tokenizer)
        self.model = BareVAE(vocab, s.model).to(trainer.device).train()
        o = s.optim
        self.optimizer = (torch.optim.Adam(self.model.parameters(), lr=o.lr, betas=o.betas,
                                           weight_decay=o.weight_decay) if o.name == "adam" else
                          torch.optim.SGD(self.model.parameters(), lr=o.lr, momentum=o.momentum,
                                          weight_decay=o.weight_decay))
        self.clip, self.device = o.clip_norm, trainer.device
        self.B = s.train.batch_size
        self.T = max(2, round(split.num_tokens / len(split)))  # the mean sentence length, <eos> included
        n = split.num_tokens // (self.B * self.T)
        self.stream = split.ids[: n * self.B * self.T].long().view(n, self.B, self.T)
        self.bos, self.i = trainer.corpus.tokenizer.bos_id, 0

    def __call__(self, beta: float = 1.0) -> int:
        targets = self.stream[self.i % len(self.stream)].to(self.device)
        self.i += 1
        inputs = torch.cat([torch.full_like(targets[:, :1], self.bos), targets[:, :-1]], dim=1)
        loss = self.model(targets, inputs, beta)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        return self.B * self.T


def counted(fn, steps: int, host=lambda: ()) -> tuple[float, float, Counter]:
    """Host reads and operators per call of fn() over `steps` calls, and the reads by name;
    `host()`: the tensors that stay on the host on every device (a batch not yet moved)."""
    reads, ops, where = 0, 0, Counter()
    for _ in range(steps):
        with HostReads(host=host()) as c:
            fn()
        reads, ops, where = reads + c.reads, ops + c.ops, where + c.where
    return reads / steps, ops / steps, where


def profile(name: str, fn, steps: int, rows: int = 25) -> None:
    """torch.profiler's table of `steps` calls of the step fn(), by self CPU time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            fn()
    print(f"{name} step, {steps} steps:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def timed(fn, steps: int, sync: bool) -> tuple[int, float]:
    """Tokens of `steps` calls of fn() (each returns its tokens) and their wall seconds."""
    tokens, started = 0, time.perf_counter()
    for _ in range(steps):
        tokens += fn()
    if sync:
        torch.cuda.synchronize()
    return tokens, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", default=["+experiment=ptb"])
    parser.add_argument("--steps", type=int, default=200, help="timed steps of each")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--block", type=int, default=10, help="steps per block of the alternation")
    parser.add_argument("--bare", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the bare reference step (--no-bare: the project's alone)")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="print torch.profiler's table of this many project steps and stop")
    args = parser.parse_args()

    register()  # the schemas and the options conf/ is composed on
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", overrides=args.overrides)
    settings = train_settings(cfg)
    if settings.train.num_threads:
        torch.set_num_threads(settings.train.num_threads)
    trainer = Trainer(cfg, settings, run_dir=Path("/nonexistent"))  # nothing is written
    split = trainer.corpus["train"]  # tokenized with the configured tokenizer, as training does
    plan = batch_plan(split, settings.train.batch_size, shuffle=True, seed=settings.seed,
                      pool=settings.data.bucket_pool)
    trainer.plan = plan  # the aggressive inner loop draws its batches from it
    batches = itertools.chain.from_iterable(  # epoch after epoch: any --steps
        iterate(split, plan, device=trainer.device) for _ in itertools.count())
    bare = BareStep(trainer, split) if args.bare else None
    sync = trainer.device.type == "cuda"
    window, ahead = TrainWindow(), []  # the loop's train/ means, and the next batch once drawn

    def next_batch():
        return ahead.pop() if ahead else next(batches)

    def project() -> int:  # a step between two log lines, as vae_text.run.loop runs it
        stats = trainer.train_step(next_batch())
        window.add(stats)
        return stats["tokens"]

    def log_step() -> int:  # a step that ends a window: the loop's log-step reads
        tokens = project()
        read_window(trainer, window, seconds=1.0)
        return tokens

    def batch_on_host():  # drawn before the count starts: a batch the counted step finds ready
        ahead.append(next(batches))
        b = ahead[0]
        return [b.lengths, b.tokens] if b.tokens.device.type == "cpu" else []

    order = ["project", "bare"] if bare else ["project"]
    fns = {"project": project, "bare": bare}
    for _ in range(args.warmup):
        for name in order:
            fns[name]()
    if args.profile:
        for name in order:
            profile(name, fns[name], args.profile)
        return
    if sync:
        torch.cuda.synchronize()
    runs = {"project": [], "bare": []}  # (tokens, seconds) of each block
    block = max(1, min(args.block, args.steps))
    for r in range(max(1, args.steps // block)):
        for name in order if r % 2 == 0 else order[::-1]:
            runs[name].append(timed(fns[name], block, sync))

    plain = counted(project, 5, batch_on_host)
    logged = counted(log_step, 3, batch_on_host)
    # plain Adam keeps its step counts on the host, on CUDA too: reading them is no wait
    bare_counts = counted(bare, 3, lambda: [st["step"] for st in bare.optimizer.state.values()]) \
        if bare else None

    tokens = sum(t for t, _ in runs["project"])
    seconds = sum(s for _, s in runs["project"])
    steps = len(runs["project"]) * block
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"overrides: {' '.join(args.overrides)}")
    print(f"machine: {platform.machine()} {platform.processor() or ''} | device {trainer.device} | "
          f"torch {torch.__version__} | threads {torch.get_num_threads()}")
    # other processes slow the figures down: say how busy the machine was (1-minute average)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"batch {settings.train.batch_size} | train.compile={settings.train.compile} | {steps} steps | "
          f"after {args.warmup} warm-up steps (compiling included) | {tokens} tokens | {seconds:.2f} s")
    print(f"train tokens/s: {tokens / seconds:,.0f}")
    print(f"sentences/s:    {steps * settings.train.batch_size / seconds:,.1f}")
    # what a step would wait for on a GPU (vae_text.run.hostreads), counted after the timing
    print(f"host reads/step: {plain[0]:g} (non-logging step) | {logged[0]:g} (log step: "
          f"{', '.join(f'{k} {v / 3:g}' for k, v in logged[2].items()) or 'none'})"
          + (f" | bare step {bare_counts[0]:g}" if bare else ""))
    print(f"operators/step:  {plain[1]:,.0f} (non-logging step) | {logged[1]:,.0f} (log step)"
          + (f" | bare step {bare_counts[1]:,.0f}" if bare else ""))
    if plain[0]:
        print(f"  non-logging reads: {dict(plain[2])}")
    if bare:
        rate = {k: [t / s for t, s in v] for k, v in runs.items()}
        ratios = [p / b for p, b in zip(rate["project"], rate["bare"], strict=True)]
        print(f"bare step:      batch {bare.B} x {bare.T} tokens (fixed length), "
              f"{len(runs['bare'])} blocks of {block} steps alternating with the project's")
        print(f"median tokens/s per block: project {statistics.median(rate['project']):,.0f} | "
              f"bare {statistics.median(rate['bare']):,.0f}")
        print(f"project / bare: {statistics.median(ratios):.2f}x (median of {len(ratios)} block "
              f"pairs; min {min(ratios):.2f}, max {max(ratios):.2f})")
    if bare:
        print("(the peak RSS below covers both models; --no-bare measures the project's alone)")
    print(f"peak RSS:       {peak_kib / 1024:,.0f} MiB")
    if sync:
        print(f"peak CUDA mem:  {torch.cuda.max_memory_allocated() / 2**20:,.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
