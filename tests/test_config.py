import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CONF, ROOT, compose_cfg, tiny_overrides
from vae_text.errors import ConfigError
from vae_text.train import Settings

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def test_there_are_experiments():
    assert {"ptb", "smoke"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_validates(name):
    cfg = compose_cfg([f"+experiment={name}"])
    settings = Settings.from_cfg(cfg)
    assert settings.model.latent_size > 0


def test_defaults_are_the_founding_design():
    s = Settings.from_cfg(compose_cfg(["+experiment=ptb"]))
    m = s.model
    assert (m.embed_size, m.encoder_hidden, m.latent_size, m.decoder_hidden) == (100, 200, 32, 100)
    assert m.conditioning == "both" and m.kind == "vae" and not m.bidirectional
    assert s.data.dir == "data/ptb"


@pytest.mark.parametrize("override,key", [
    ("objective.kl_weight=-0.5", "objective.kl_weight"),
    ("objective.schedule.name=cosine", "objective.schedule.name"),
    ("model.latent_size=0", "model.latent_size"),
    ("+model.latnt_size=3", "model.latnt_size"),
    ("objective.schedule.warmup_steps=0", "objective.schedule"),
    ("+objective.schedule.warmup_stepz=4", "objective.schedule.warmup_stepz"),
    ("optim.lr=0", "optim.lr"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.max_minutes=0", "train.max_minutes"),
    ("optim.clip_norm=-1", "optim.clip_norm"),
    ("model.bn_gamma=abc", "model.bn_gamma"),
    ("logger.name=tensorboard", "logger.name"),
])
def test_invalid_values_fail_with_the_key_named(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        Settings.from_cfg(compose_cfg(["+experiment=smoke", override]))


def test_switching_schedule_drops_the_experiments_other_schedule_parameters():
    s = Settings.from_cfg(compose_cfg(["+experiment=ptb", "objective/schedule=logistic"]))
    assert s.objective.schedule.name == "logistic"
    assert s.objective.schedule.params == {"k": 0.0025, "x0": 2500}


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vae_text.train", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_cli_rejects_bad_config_before_reading_data(tmp_path):
    # data.dir does not exist: the config error must come first, and nothing be written
    proc = run_cli("+experiment=smoke", f"data.dir={tmp_path}/missing", "objective.kl_weight=-1",
                   f"hydra.run.dir={tmp_path}/run")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["error: objective.kl_weight=-1 is invalid: it must be a number >= 0"]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_cli_missing_data_is_one_clear_line(tmp_path):
    proc = run_cli("+experiment=smoke", f"data.dir={tmp_path}/nowhere", "data.hub=null",
                   f"hydra.run.dir={tmp_path}/run")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: data directory")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_runs_the_smoke_experiment(corpus_dir, tmp_path):
    proc = run_cli(*tiny_overrides(corpus_dir), f"hydra.run.dir={tmp_path}/run")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "results.json").is_file()
    assert (tmp_path / "run" / ".hydra" / "overrides.yaml").is_file()


def test_multirun_writes_one_directory_per_value(corpus_dir, tmp_path):
    proc = run_cli("-m", *tiny_overrides(corpus_dir, "train.max_steps=6"),
                   "objective.kl_weight=0.5,1.0", f"hydra.sweep.dir={tmp_path}/sweep")
    assert proc.returncode == 0, proc.stderr
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert [[o for o in p.name.split(",") if o.startswith("objective.")] for p in jobs] == [
        ["objective.kl_weight=0.5"], ["objective.kl_weight=1.0"]]
    for job, beta in zip(jobs, (0.5, 1.0)):
        assert (job / "metrics.jsonl").stat().st_size > 0
        assert f"kl_weight: {beta}" in (job / "config.yaml").read_text()
        assert "data.dir" not in job.name  # paths never end up in folder names
