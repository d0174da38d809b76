"""Shared fixtures: a tiny synthetic corpus, config composition, the real PTB folder."""

from __future__ import annotations

import atexit
import hashlib
import os
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

from vae_text.run.parts import register

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
PTB_DIR = ROOT / "data" / "ptb"

# The `cuda` tests run on CUDA when it is there and skip otherwise; VAE_TEXT_CUDA_TESTS_DEVICE=cpu
# runs their bodies on the CPU (how they are checked on a machine without a GPU).
CUDA_TESTS_DEVICE = os.environ.get("VAE_TEXT_CUDA_TESTS_DEVICE", "cuda")
CUDA_MARKS = [
    pytest.mark.cuda,
    pytest.mark.skipif(CUDA_TESTS_DEVICE == "cuda" and not torch.cuda.is_available(),
                       reason="CUDA is not available here (VAE_TEXT_CUDA_TESTS_DEVICE=cpu runs "
                              "these tests on the CPU)"),
]

# Hypothesis keeps no example database, and the files it still keeps (its cache of the package's
# constants, its Unicode tables) go to a temporary folder: not .hypothesis/ in the checkout.
settings.register_profile("vae_text", database=None)
settings.load_profile("vae_text")
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="vae_text-hypothesis-")
set_hypothesis_home_dir(_HYPOTHESIS_HOME)
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, ignore_errors=True)

register()  # the schemas and options conf/ is composed on (the entry points register them too)

NOUNS = ["cat", "dog", "bird", "fish", "man", "woman", "child", "car"]
VERBS = ["sees", "likes", "eats", "chases", "finds"]
ADJS = ["big", "small", "red", "old", "happy"]


def make_sentences(n: int, seed: int) -> list[str]:
    """A toy grammar: 'the [adj] noun verb the [adj] noun [and ...]', 4 to 13 words."""
    rng = random.Random(seed)

    def phrase() -> str:
        adj = f"{rng.choice(ADJS)} " if rng.random() < 0.5 else ""
        return f"the {adj}{rng.choice(NOUNS)}"

    out = []
    for _ in range(n):
        s = f"{phrase()} {rng.choice(VERBS)} {phrase()}"
        if rng.random() < 0.3:
            s += f" and {rng.choice(VERBS)} {phrase()}"
        out.append(s)
    return out


def write_corpus(directory: Path, sizes=(120, 30, 37), prefix: str = "ptb.") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for seed, (split, n) in enumerate(zip(("train", "valid", "test"), sizes)):
        lines = make_sentences(n, seed)
        (directory / f"{prefix}{split}.txt").write_text("".join(f" {s} \n" for s in lines))
    return directory


def folder_record(folder: Path, *, mtimes: bool = False) -> dict[str, object]:
    """Every file (path and bytes' sha256, and its modification time when `mtimes`) and every folder
    under `folder`: equal before and after a command means the command left `folder` as it was."""
    def entry(p: Path):
        if not p.is_file():
            return "dir"
        sha = hashlib.sha256(p.read_bytes()).hexdigest()
        return (sha, p.stat().st_mtime_ns) if mtimes else sha
    return {str(p.relative_to(folder)): entry(p) for p in sorted(folder.rglob("*"))}


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus")


# Every dimension a different size: batch 7, embed 12, encoder 20, latent 6, decoder 16,
# vocabulary 4 specials + 21 words = 25 (found by the data test).
TINY = [
    "model.embed_size=12", "model.encoder_hidden=20", "model.latent_size=6",
    "model.decoder_hidden=16", "train.batch_size=7", "eval.batch_size=11",
    "train.progress=false", "train.log_every=5", "train.num_threads=1",
]


def tiny_overrides(data_dir: Path, *extra: str) -> list[str]:
    return ["+experiment=smoke", f"data.dir={data_dir}", f"data.cache_dir={data_dir}/cache",
            "data.hub=null", *TINY, *extra]


def fit_tiny(model, batch, steps: int, kl_weight: float = 0.3, lr: float = 0.02):
    """A few full-batch Adam steps on rec + kl_weight * KL: a small model that uses its latent."""

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        out = model(batch.tokens, batch.lengths)
        loss = out.rec.mean() + kl_weight * out.kl.sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("train", overrides=overrides)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One tiny model trained once per session (4 steps on the synthetic corpus, K = 2 at the end),
    for the tests that only read a trained run: they share it, so none may write into it."""
    from vae_text.train import train

    corpus = write_corpus(tmp_path_factory.mktemp("tiny_run_corpus"))
    run = tmp_path_factory.mktemp("tiny_run") / "run"
    train(compose_cfg(tiny_overrides(corpus, "train.max_steps=4", "eval.iw_samples=2")), run)
    return run


@pytest.fixture(scope="session")
def ptb_cache(tmp_path_factory) -> Path:
    """One token cache for the PTB tests of a session (tokenizing PTB takes seconds)."""
    return tmp_path_factory.mktemp("ptb_cache")


@pytest.fixture
def ptb_dir() -> Path:
    """The real PTB files; CI links them into data/ptb. Outside CI their absence skips."""
    if not all((PTB_DIR / f"ptb.{s}.txt").is_file() for s in ("train", "valid", "test")):
        if os.environ.get("CI"):
            pytest.fail(f"{PTB_DIR} is missing in CI: .ci/run must link ../shared/data/ptb there")
        pytest.skip(f"PTB not found in {PTB_DIR}")
    return PTB_DIR


# What a test run may leave in a checkout: Python's and the tools' own caches.
TOOL_CACHES = ("__pycache__", ".pytest_cache", ".ruff_cache", ".venv")
CHECKOUT_BEFORE = pytest.StashKey[set]()


def checkout_files() -> set[str] | None:
    """The untracked and ignored paths of the checkout (None outside a git checkout): a test that
    writes into the checkout adds one."""
    if not (ROOT / ".git").exists():
        return None
    try:
        listed = subprocess.run(
            ["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "--", "."],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    paths = {line[3:] for line in listed.splitlines() if line[:2] in ("??", "!!")}
    return {p for p in paths if not set(Path(p).parts) & set(TOOL_CACHES)}


def pytest_configure(config):
    # Tests use tiny models: one thread is faster than two fighting over small matrices.

    torch.set_num_threads(1)


def pytest_sessionstart(session):
    session.config.stash[CHECKOUT_BEFORE] = checkout_files()


def pytest_sessionfinish(session, exitstatus):
    # Tests write into tmp_path, never into the checkout.
    before = session.config.stash.get(CHECKOUT_BEFORE, None)
    after = checkout_files() if before is not None else None
    if before is not None and after is not None and after - before:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        reporter.write_line("\nerror: the tests wrote into the checkout (use tmp_path): "
                            + ", ".join(sorted(after - before)[:10]), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    # An empty selection must fail, never pass quietly as "no tests ran" (pytest's exit code 5).
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        reporter.write_line("error: no tests were collected: check the path or -k / -m", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
