"""Data-parallel training on CPU (gloo): torchrun with 2 processes must give the 1-process run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from conftest import ROOT, TINY, make_sentences
from vae_text.config import ModelConfig
from vae_text.core.distributed import Dist, rank_device
from vae_text.core.errors import ConfigError
from vae_text.data.corpus import PAD, Vocab, encode_split
from vae_text.metrics import EvalConfig, evaluate
from vae_text.model.textvae import build_model
from vae_text.run.checkpoint import load_checkpoint

# word dropout, sampled z and per-dimension free bits (a batch-level threshold) all in play; a global
# batch of 7 splits 3 + 4 over two ranks; no nn.Dropout (its masks are drawn per rank); the CPU,
# so that both runs train on one device even where a GPU is visible
CONFIG = [*TINY, "model.word_dropout=0.3", "objective.free_bits=2.0", "objective.schedule.warmup_steps=9",
          "eval.iw_samples=4", "train.epochs=3", "data.max_sentences=40", "train.log_every=1",
          "device=cpu"]


def torchrun(n: int, run_dir, corpus_dir, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
               "-m", "vae_text.train"] if n > 1 else [sys.executable, "-m", "vae_text.train"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*command, "+experiment=smoke", f"data.dir={corpus_dir}",
                           f"data.cache_dir={corpus_dir}/cache", "data.hub=null", *CONFIG, *extra,
                           f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def train_curve(run_dir) -> list[float]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in lines if "train/loss" in r]


def assert_same_weights(a: dict, b: dict, atol: float = 2e-5) -> None:
    for key, value in a["model"].items():
        assert torch.allclose(value, b["model"][key], atol=atol, rtol=1e-4), key


@pytest.mark.slow
def test_two_gloo_processes_train_like_one_and_resume_with_another_count(corpus_dir, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for n, run in ((1, one), (2, two)):
        proc = torchrun(n, run, corpus_dir)
        assert proc.returncode == 0, proc.stderr[-3000:]
    curve_one, curve_two = train_curve(one), train_curve(two)
    assert len(curve_one) == len(curve_two) == 18  # 40 sentences / 7 = 6 batches, 3 epochs
    assert curve_two == pytest.approx(curve_one, rel=1e-5)
    assert_same_weights(load_checkpoint(one, "last.pt"), load_checkpoint(two, "last.pt"))
    test_one = json.loads((one / "eval_test.json").read_text())
    test_two = json.loads((two / "eval_test.json").read_text())
    for key in ("rec", "kl", "nll_iw", "mi", "au", "sentences", "tokens", "recon_bleu"):
        assert test_two[key] == pytest.approx(test_one[key], rel=1e-4, abs=1e-4), key
    # one run directory, one checkpoint set, one metrics file, no stray Hydra folders
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "one", "two"]
    assert json.loads((two / "results.json").read_text())["processes"] == 2

    # resume the 1-process run's first half with 2 processes: same as the whole 1-process run
    half = tmp_path / "half"
    assert torchrun(1, half, corpus_dir, "train.max_steps=8").returncode == 0
    proc = torchrun(2, half, corpus_dir, f"train.resume={half}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert train_curve(half) == pytest.approx(curve_one, rel=1e-5)
    assert_same_weights(load_checkpoint(one, "last.pt"), load_checkpoint(half, "last.pt"))


@pytest.mark.slow
def test_transformer_parts_train_like_one_process_on_two(corpus_dir, tmp_path):
    """The same check for the Transformer decoder and encoder (z as memory and embedding, tied
    readout): DDP needs nothing of a decoder but its parameters."""
    parts = ("model/decoder=transformer", "model/encoder=transformer", "model.decoder_args.tie_embeddings=true",
             "train.epochs=2")
    runs = {n: tmp_path / f"p{n}" for n in (1, 2)}
    for n, run in runs.items():
        proc = torchrun(n, run, corpus_dir, *parts)
        assert proc.returncode == 0, proc.stderr[-3000:]
    curve_one, curve_two = train_curve(runs[1]), train_curve(runs[2])
    assert len(curve_one) == 12 and curve_two == pytest.approx(curve_one, rel=1e-5)
    assert curve_one[-1] < curve_one[0]
    assert_same_weights(load_checkpoint(runs[1], "last.pt"), load_checkpoint(runs[2], "last.pt"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _evaluate_on_rank(rank: int, world: int, port: int, model, split, vocab, out) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        metrics = evaluate(model, split, vocab, EvalConfig(batch_size=5, iw_samples=6, progress=False),
                           dist=Dist(rank, world, rank))
        if rank == 0:
            out.put(metrics)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_evaluation_over_three_ranks_equals_one_when_batches_do_not_divide():
    sentences = [s.split() for s in make_sentences(37, 5)]  # 8 batches of 5 (the last of 2) over 3
    vocab = Vocab.build(sentences)
    assert vocab.itos[0] == PAD
    split = encode_split(sentences, vocab)
    torch.manual_seed(0)
    cfg = ModelConfig(embed_size=9, encoder_hidden=11, latent_size=4, decoder_hidden=13)
    model = build_model(cfg, vocab).eval()
    single = evaluate(model, split, vocab, EvalConfig(batch_size=5, iw_samples=6, progress=False))
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    mp.start_processes(_evaluate_on_rank, args=(3, _free_port(), model, split, vocab, out), nprocs=3,
                       start_method="spawn")
    spread = out.get(timeout=60)
    assert spread["sentences"] == single["sentences"] == 37 and spread["tokens"] == single["tokens"]
    for key in ("rec", "kl", "neg_elbo", "nll_iw", "ppl_iw", "mi", "au", "token_accuracy",
                "recon_exact", "recon_bleu"):
        assert spread[key] == pytest.approx(single[key], rel=1e-9, abs=1e-9), key
    assert spread["kl_per_dim"] == pytest.approx(single["kl_per_dim"], rel=1e-9)


@pytest.mark.parametrize("requested, local_rank, local_world, gpus, device, backend", [
    ("auto", 1, 2, 4, "cuda:1", "nccl"),  # one GPU per process
    ("cuda", 2, 3, 3, "cuda:2", "nccl"),
    ("cuda:3", 1, 2, 4, "cuda:1", "nccl"),  # a process's GPU is its local rank's
    ("auto", 1, 3, 0, "cpu", "gloo"),  # no GPU: gloo on the CPU, nothing to explain
    ("cpu", 1, 2, 5, "cpu", "gloo"),
])
def test_rank_device_gives_each_process_its_own_gpu_or_the_cpu(requested, local_rank, local_world,
                                                                  gpus, device, backend):
    assert rank_device(requested, local_rank, local_world, gpus) == (torch.device(device), backend, None)


def test_rank_device_never_names_a_gpu_that_is_not_there():
    # 2 processes on a machine with 1 GPU: auto trains both on the CPU and says so in one line
    device, backend, why = rank_device("auto", 1, 2, 1)
    assert (device, backend) == (torch.device("cpu"), "gloo")
    assert why == ("device=auto: 2 processes on this node but 1 visible GPU(s): every process trains "
                   "on the CPU (gloo); start at most 1 per node (torchrun --nproc_per_node) to use them")
    with pytest.raises(ConfigError, match=r"^device=cuda: 3 processes on this node but 2 visible GPU\(s\); "
                                          r"start at most 2 per node .* or set device=cpu$"):
        rank_device("cuda", 2, 3, 2)
    for requested in ("auto", "cuda", "cuda:0", "cpu"):
        for gpus in range(4):
            for local_world in range(1, 6):
                for local_rank in range(local_world):
                    try:
                        device, backend, _ = rank_device(requested, local_rank, local_world, gpus)
                    except ConfigError:
                        assert requested.startswith("cuda") and local_world > gpus
                        continue
                    assert device.type == "cpu" or device.index < gpus, (requested, local_rank, gpus)
                    assert backend == ("nccl" if device.type == "cuda" else "gloo")


def test_slurm_ddp_launcher_composes_and_slurm_tasks_become_ranks(monkeypatch):
    from hydra import compose, initialize_config_dir

    from conftest import CONF
    from vae_text.core.distributed import _slurm_env

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", overrides=["+experiment=ptb", "hydra/launcher=slurm_ddp",
                                          "hydra.launcher.nodes=2"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert cfg.train.batch_size == 32  # the global batch, whatever the number of tasks

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.delenv("SLURM_STEP_NUM_TASKS", raising=False)
    assert _slurm_env() == {}  # the batch script of an 8-task job, not an srun step: one process
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")
    assert _slurm_env() == {}  # a 1-task step: not distributed
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "8")
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_LAUNCH_NODE_IPADDR", "10.0.0.7")
    env = _slurm_env()
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == ("5", "8", "1")
    assert env["MASTER_ADDR"] == "10.0.0.7" and env["MASTER_PORT"] == str(20000 + 4242)


def test_bf16_autocast_trains_on_cpu(corpus_dir, tmp_path):
    import torch

    from conftest import compose_cfg, tiny_overrides
    from vae_text.core.errors import ConfigError
    from vae_text.train import train

    cfg = compose_cfg(tiny_overrides(corpus_dir, "train.precision=bf16", "train.max_steps=6",
                                     "eval.iw_samples=2"))
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():  # e.g. an AVX2-only CPU: one clear line
        with pytest.raises(ConfigError, match="train.precision=bf16: this CPU has no bfloat16"):
            train(cfg, tmp_path / "run")
        assert not (tmp_path / "run" / "checkpoints").exists()
        return
    results = train(cfg, tmp_path / "run")
    assert results["steps"] == 6 and results["test"]["rec"] > 0
