"""The Optuna search survives its trials (vae_text.run.search): a failed trial is told to the study
as failed and the others run; the search fails only when all (or too many) of its trials do; a bad
setting is one line; a sqlite study continues when relaunched; the log is plain text."""

import os
import subprocess
import sys

import pytest

optuna = pytest.importorskip("optuna")  # the `search` extra

import sqlalchemy  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from conftest import ROOT, tiny_overrides  # noqa: E402
from vae_text.core.errors import ConfigError  # noqa: E402
from vae_text.run.search import (  # noqa: E402
    OptunaSearch,
    _make_sqlite_folder,
    search_space,
    trial_score,
)

SQLALCHEMY_2 = int(sqlalchemy.__version__.split(".")[0]) >= 2
# the search's own sweeper with a grid over the values a test gives, so that which trials fail
# does not depend on the sampler's draws
GRID = ["hydra/sweeper=optuna", "hydra/sweeper/sampler=grid",
        "hydra.sweeper._target_=hydra_plugins.vae_text_search.OptunaSearchSweeper",
        "+hydra.callbacks.sweep.fail_on_error=false", "hydra.sweeper.n_jobs=1"]
FAST = ["train.max_steps=3", "eval.iw_samples=2", "eval.reconstruct=false"]


def launch(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vae_text.train", "-m", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                               "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"})


def search(**settings):
    base = dict(sampler=None, direction="minimize", storage=None, study_name=None, n_trials=3,
                n_jobs=1, max_failure_rate=0.5, search_space=None, custom_search_space=None,
                params=None)
    return OptunaSearch(**{**base, **settings})


@pytest.mark.parametrize("setting, line", [
    (dict(n_trials=0), "hydra.sweeper.n_trials=0: must be a whole number >= 1"),
    (dict(n_jobs=-2), "hydra.sweeper.n_jobs=-2: must be a whole number >= 1"),
    (dict(direction="sideways"),
     "hydra.sweeper.direction=sideways: a trial returns one score; use minimize or maximize"),
    (dict(direction=OmegaConf.create(["minimize", "maximize"])),
     "hydra.sweeper.direction=['minimize', 'maximize']: a trial returns one score; use minimize "
     "or maximize"),
    (dict(max_failure_rate=1.5), "hydra.sweeper.max_failure_rate=1.5: must be a share between 0 "
     "and 1 (0.5: up to half of the trials may fail)"),
])
def test_bad_settings_are_refused_with_one_line(setting, line):
    with pytest.raises(ConfigError) as err:
        search(**setting)
    assert str(err.value) == line


def test_a_bad_search_space_is_refused_naming_where_it_was_written():
    with pytest.raises(ConfigError) as err:
        search_space({"hydra.sweeper.params.objective.kl_weight": "objective.kl_weight=interval(1.0, 0.1)"})
    assert str(err.value) == ("hydra.sweeper.params.objective.kl_weight=interval(1.0, 0.1): the "
                              "interval is reversed; write interval(0.1, 1.0)")
    with pytest.raises(ConfigError) as err:
        search_space({"optim.lr=tag(log, interval(0, 0.1))": "optim.lr=tag(log, interval(0, 0.1))"})
    assert str(err.value).startswith("optim.lr=tag(log, interval(0, 0.1)): ")
    distributions, fixed = search_space({"a": "model.word_dropout=interval(0.1, 0.4)",
                                         "b": "seed=3"})
    assert (distributions["model.word_dropout"].low, distributions["model.word_dropout"].high) \
        == (0.1, 0.4) and fixed == {"seed": "3"}


def test_a_failed_job_scores_none():
    from hydra.core.utils import JobReturn, JobStatus

    def ret(value, status=JobStatus.COMPLETED):
        r = JobReturn()
        r.status, r.return_value = status, value
        return r

    assert trial_score(ret(2.5)) == 2.5
    assert [trial_score(ret(v)) for v in (float("nan"), float("inf"), None, "abc")] == [None] * 4
    assert trial_score(ret(RuntimeError("boom"), JobStatus.FAILED)) is None


def test_a_sqlite_storage_gets_its_folder_or_one_line(tmp_path):
    _make_sqlite_folder(f"sqlite:///{tmp_path}/a/b/study.db")
    assert (tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError) as err:
        _make_sqlite_folder(f"sqlite:///{tmp_path}/file/study.db")
    assert str(err.value) == (f"hydra.sweeper.storage=sqlite:///{tmp_path}/file/study.db: cannot "
                              f"make its folder {tmp_path}/file (File exists)")


@pytest.mark.slow
def test_a_bad_setting_on_the_command_line_is_one_line(corpus_dir, tmp_path):
    proc = launch("hparams_search=ptb_optuna", *tiny_overrides(corpus_dir),
                  "hydra.sweeper.direction=sideways", f"hydra.sweep.dir={tmp_path / 's'}")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: hydra.sweeper.direction=sideways: a trial returns one "
                                   "score; use minimize or maximize")
    assert not (tmp_path / "s").exists()  # nothing written


@pytest.mark.slow
def test_one_failing_trial_is_recorded_and_the_search_goes_on(corpus_dir, tmp_path):
    sweep = tmp_path / "search"
    proc = launch(*GRID, *tiny_overrides(corpus_dir, *FAST), "hydra.sweeper.max_failure_rate=0.5",
                  "model.word_dropout=choice(0.1,1.5,0.2)", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    done = sorted(p.name for p in sweep.iterdir() if (p / "results.json").is_file())
    failed = [p for p in sweep.iterdir() if (p / "error.txt").is_file()]
    assert len(done) == 2 and len(failed) == 1 and "model.word_dropout-1.5" in failed[0].name
    assert "model.word_dropout=1.5 is invalid" in (failed[0] / "error.txt").read_text()
    assert "trial " in proc.stdout + proc.stderr and "failed (its error: " in proc.stdout + proc.stderr
    assert "Values were told" not in proc.stderr and "Traceback" not in proc.stderr
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_params["model.word_dropout"] in (0.1, 0.2)
    for out in (proc.stdout, proc.stderr):  # plain text: no colour codes, no alembic set-up lines
        assert "\x1b[" not in out and "setup plugin" not in out


@pytest.mark.slow
def test_a_search_whose_trials_all_fail_exits_with_one_line(corpus_dir, tmp_path):
    sweep = tmp_path / "search"
    proc = launch(*GRID, *tiny_overrides(corpus_dir, *FAST), "hydra.sweeper.max_failure_rate=1.0",
                  "model.word_dropout=choice(1.5,2.5)", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: 2 of 2 Optuna trials failed (hydra.sweeper."
                                   f"max_failure_rate=1.0); their errors: {sweep}/*/error.txt")
    assert len(list(sweep.glob("*/error.txt"))) == 2


@pytest.mark.slow
@pytest.mark.skipif(SQLALCHEMY_2, reason="optuna 2.x stores studies only with SQLAlchemy < 2 "
                    "(pyproject's search extra pins it); this venv has " + sqlalchemy.__version__)
def test_a_sqlite_study_runs_and_continues_when_relaunched_with_more_trials(corpus_dir, tmp_path):
    sweep, db = tmp_path / "search", tmp_path / "new" / "study.db"  # its folder is made
    args = ["hparams_search=ptb_optuna", *tiny_overrides(corpus_dir, *FAST),
            f"hydra.sweeper.storage=sqlite:///{db}", f"hydra.sweep.dir={sweep}"]
    first = launch(*args, "hydra.sweeper.n_trials=2")
    assert first.returncode == 0, first.stderr
    second = launch(*args, "hydra.sweeper.n_trials=3")
    assert second.returncode == 0, second.stderr
    assert "2 trials finished, 1 to run (n_trials=3)" in second.stdout + second.stderr
    study = optuna.load_study(study_name="ptb_optuna", storage=f"sqlite:///{db}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 3  # no trial repeated
    assert len(list(sweep.glob("*/results.json"))) == 3
    for out in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert "\x1b[" not in out and "setup plugin" not in out
    turned = launch(*args, "hydra.sweeper.n_trials=4", "hydra.sweeper.direction=maximize")
    assert turned.returncode == 2
    assert turned.stderr.strip() == (f"error: hydra.sweeper.direction=maximize: study ptb_optuna in "
                                     f"sqlite:///{db} was made to minimize; use that, or another "
                                     f"hydra.sweeper.study_name")


@pytest.mark.slow
@pytest.mark.skipif(not SQLALCHEMY_2, reason="the refusal is for SQLAlchemy 2 with optuna 2.x")
def test_a_storage_with_sqlalchemy_2_is_one_line(corpus_dir, tmp_path):
    proc = launch("hparams_search=ptb_optuna", *tiny_overrides(corpus_dir),
                  f"hydra.sweeper.storage=sqlite:///{tmp_path}/study.db",
                  f"hydra.sweep.dir={tmp_path / 's'}")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: hydra.sweeper.storage=sqlite:///{tmp_path}/study.db: optuna {optuna.__version__} "
        f"needs SQLAlchemy < 2 (installed: {sqlalchemy.__version__}); pip install "
        f"\"vae_text[search]\" pins both")
