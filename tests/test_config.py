import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from conftest import CONF, ROOT, compose_cfg, tiny_overrides
from vae_text.config import (
    DecodeConfig,
    EvalConfig,
    EvaluateConfig,
    ObjectiveConfig,
    SampleConfig,
    TrainRunConfig,
    compose_error,
    schedule_defaults,
    section,
)
from vae_text.config.entry import _open_dicts
from vae_text.core.errors import ConfigError
from vae_text.objectives import SCHEDULES
from vae_text.run.parts import check_names, checked_schedule, train_settings

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
SECTIONS = [f.name for f in dataclasses.fields(TrainRunConfig)]


@dataclasses.dataclass
class _Family:  # the shape of a config with a family's options, e.g. model.posterior_args
    size: int = 3
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Owner:
    family: _Family = dataclasses.field(default_factory=_Family)


def test_every_open_dict_field_takes_any_key_with_no_extra_code():
    node = _open_dicts(OmegaConf.structured(_Owner), _Owner)
    OmegaConf.set_struct(node, True)  # as Hydra leaves a composed config
    node.family.options.df = 5  # what `family.options.df=5` does on the command line
    assert section(_Owner, node, "owner").family.options == {"df": 5}
    with pytest.raises(AttributeError, match="sizee"):
        node.family.sizee = 4


def compose_entry(name: str, overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(name, overrides=overrides)


@pytest.mark.parametrize("name", SECTIONS)
def test_the_dataclasses_are_the_one_source_of_defaults(name):
    # conf/ with no overrides adds nothing to the dataclasses' defaults, key for key
    composed = OmegaConf.to_container(compose_cfg([]), resolve=True)[name]
    schema = OmegaConf.to_container(OmegaConf.structured(TrainRunConfig))[name]
    if name == "objective":  # objective/schedule=linear spells out its function's defaults
        schema["schedule"] |= schedule_defaults(SCHEDULES["linear"])
    assert composed == schema
    assert getattr(train_settings(compose_cfg([])), name) == getattr(check_names(TrainRunConfig()), name)


def test_evaluate_and_sample_defaults_come_from_the_suite_and_decoding_dataclasses():
    ev = section(EvaluateConfig, compose_entry("evaluate", ["checkpoint=run"]), "")
    assert ev == EvaluateConfig(checkpoint="run")
    assert {f.name: getattr(ev, f.name) for f in dataclasses.fields(EvalConfig)} == \
        dataclasses.asdict(EvalConfig())
    sa = section(SampleConfig, compose_entry("sample", ["checkpoint=run"]), "")
    assert sa == SampleConfig(checkpoint="run")
    assert {f.name: getattr(sa, f.name) for f in dataclasses.fields(DecodeConfig)} == \
        dataclasses.asdict(DecodeConfig())
    assert sa.strategy == sa.decoding == "greedy"


def test_the_default_schedule_is_linear_everywhere():
    assert ObjectiveConfig().schedule.name == "linear"
    assert compose_cfg([]).objective.schedule.name == "linear"
    assert ObjectiveConfig().schedule.params == {}  # its function's defaults come with the check
    assert checked_schedule(ObjectiveConfig().schedule).params == {"warmup_steps": 10_000, "start": 0.0}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_schedule_is_an_option_made_from_its_signature(name):
    cfg = compose_cfg([f"objective/schedule={name}"])
    assert OmegaConf.to_container(cfg.objective.schedule) == {"name": name,
                                                              **schedule_defaults(SCHEDULES[name])}
    schedule = train_settings(cfg).objective.schedule
    assert schedule.name == name and schedule.params == schedule_defaults(SCHEDULES[name])


def test_schedule_parameters_stay_flat():
    s = train_settings(compose_cfg(["objective.schedule.warmup_steps=100",
                                       "objective.schedule.start=0.25"]))
    assert s.objective.schedule.params == {"warmup_steps": 100, "start": 0.25}
    s = train_settings(compose_cfg(["objective/schedule=cyclical", "objective.schedule.cycles=3"]))
    assert s.objective.schedule.params["cycles"] == 3


@pytest.mark.parametrize("entry,override,message", [
    ("train", "model.latnet_size=3", "model.latnet_size is not a known key: valid keys are ["),
    ("train", "data.hub.idd=x", "data.hub.idd is not a known key: valid keys are ['column', "),
    ("train", "optim.lr=abc", "optim.lr is invalid: Value 'abc' of type 'str' could not be "
                              "converted to Float"),
    ("train", "model.bn_gamma=abc", "model.bn_gamma is invalid: Value 'abc'"),
    ("train", "train.epochs=1.5", "train.epochs is invalid: Value '1.5'"),
    ("train", "model.bidirectional=maybe", "model.bidirectional is invalid: Value 'maybe'"),
    ("train", "seed=abc", "seed is invalid: Value 'abc'"),
    ("evaluate", "iw_samples=many", "iw_samples is invalid: Value 'many'"),
    ("sample", "top_p=high", "top_p is invalid: Value 'high'"),
    ("sample", "temprature=0.5", "temprature is not a known key: valid keys are ["),
])
def test_unknown_keys_and_wrong_types_fail_at_compose_with_the_key_named(entry, override, message):
    with pytest.raises(ConfigCompositionException) as err:
        compose_entry(entry, [override, *(["checkpoint=x"] if entry != "train" else [])])
    line = compose_error(err.value)
    assert line.startswith(message) and "\n" not in line, line


def test_there_are_experiments():
    assert {"ptb", "smoke"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_validates(name):
    cfg = compose_cfg([f"+experiment={name}"])
    settings = train_settings(cfg)
    assert settings.model.latent_size > 0


def test_defaults_are_the_founding_design():
    s = train_settings(compose_cfg(["+experiment=ptb"]))
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
    ("objective.schedule.warmup_stepz=4", "objective.schedule.warmup_stepz"),  # an open dict
    ("optim.lr=0", "optim.lr"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.max_minutes=0", "train.max_minutes"),
    ("optim.clip_norm=-1", "optim.clip_norm"),
    ("logger.name=tensorboard", "logger.name"),
    ("+seedz=1", "seedz"),
])
def test_invalid_values_fail_with_the_key_named(override, key):
    # model.bn_gamma=abc, here before the schemas, now fails at compose (the test above)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        train_settings(compose_cfg(["+experiment=smoke", override]))
    assert "\n" not in str(err.value)


def test_switching_schedule_drops_the_experiments_other_schedule_parameters():
    s = train_settings(compose_cfg(["+experiment=ptb", "objective/schedule=logistic"]))
    assert s.objective.schedule.name == "logistic"
    assert s.objective.schedule.params == {"k": 0.0025, "x0": 2500}


def run_cli(*args: str, cwd: Path = ROOT, module: str = "vae_text.train") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("module,args,line", [
    ("vae_text.train", ["model.latnet_size=3"], "error: model.latnet_size is not a known key: "
                                                "valid keys are ['bidirectional', "),
    ("vae_text.train", ["optim.lr=abc"], "error: optim.lr is invalid: Value 'abc' of type 'str' "
                                         "could not be converted to Float"),
    ("vae_text.evaluate", ["checkpoint=x", "iw_samples=abc"], "error: iw_samples is invalid: "),
    # OmegaConf cannot merge keys into a null section: a plain AttributeError, made one line here
    ("vae_text.train", ["data=text", "data.hub={id:x}"], "error: data.hub is null here and cannot be "
                                                         "filled from the command line"),
])
def test_cli_compose_errors_are_one_line(module, args, line, tmp_path):
    proc = run_cli(*args, f"hydra.run.dir={tmp_path}/run", module=module)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(line), proc.stderr
    assert not (tmp_path / "run").exists()


def test_cli_rejects_bad_config_before_reading_data(tmp_path):
    # data.dir does not exist: the config error must come first, and nothing be written
    proc = run_cli("+experiment=smoke", f"data.dir={tmp_path}/missing", "objective.kl_weight=-1",
                   f"hydra.run.dir={tmp_path}/run")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    # the schema types kl_weight as a float, so -1 arrives as -1.0
    assert lines == ["error: objective.kl_weight=-1.0 is invalid: it must be a number >= 0"]
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


@pytest.mark.slow
def test_multirun_writes_one_directory_per_value(corpus_dir, tmp_path):
    proc = run_cli("-m", *tiny_overrides(corpus_dir, "train.max_steps=6"),
                   "objective.kl_weight=0.5,1.0", f"hydra.sweep.dir={tmp_path}/sweep")
    assert proc.returncode == 0, proc.stderr
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and p.name != ".multirun")
    # folder names safe in a shell and an override: key-value items joined by +
    assert [[o for o in p.name.split("+") if o.startswith("objective.")] for p in jobs] == [
        ["objective.kl_weight-0.5"], ["objective.kl_weight-1.0"]]
    for job, beta in zip(jobs, (0.5, 1.0)):
        assert (job / "metrics.jsonl").stat().st_size > 0
        assert f"kl_weight: {beta}" in (job / "config.yaml").read_text()
        assert "data.dir" not in job.name  # paths never end up in folder names
