"""The Optuna search (`hparams_search=ptb_optuna`): hydra-optuna-sweeper's ask-and-tell loop,
with the rules a search needs to survive its trials.

- A failed trial (its job wrote `error.txt` and returned NaN, or raised) is told to the study as
  FAIL and the search goes on. The search ends with one line and a non-zero exit status only if
  every trial of the launch failed, or more than `hydra.sweeper.max_failure_rate` of them (it
  stops as soon as that share can no longer be met).
- `hydra.sweeper.n_trials` is the size of the study: relaunched on a persistent study
  (`hydra.sweeper.storage=sqlite:///multirun/optuna.db`), the search runs only the trials it lacks.
- Every setting is checked before anything is written, each refusal one line naming the key; the
  folder of a sqlite storage is made when missing.
- optuna logs through Hydra's log (no colour codes, into the sweep's log) instead of its own
  coloured handler.

The Hydra plugin that runs it is `hydra_plugins.vae_text_search` (Hydra takes sweepers only from
that namespace). May import: core.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_optuna_sweeper._impl import (
    OptunaSweeperImpl,
    create_optuna_distribution_from_override,
)
from omegaconf import OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from vae_text.core.errors import ConfigError, VaeTextError

log = logging.getLogger("vae_text")

DIRECTIONS = ("minimize", "maximize")
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


class SearchFailed(VaeTextError):
    """Every trial of a launch failed, or more than its `max_failure_rate` of them."""


class OptunaSearch(OptunaSweeperImpl):
    """hydra-optuna-sweeper's search with checked settings and failed trials recorded as FAIL."""

    def __init__(self, *, direction: Any, n_trials: Any, n_jobs: Any, max_failure_rate: Any,
                 **settings: Any) -> None:
        name = check_settings(direction=direction, n_trials=n_trials, n_jobs=n_jobs,
                              max_failure_rate=max_failure_rate, **settings)
        super().__init__(direction=name, n_trials=n_trials, n_jobs=n_jobs,
                         max_failure_rate=float(max_failure_rate), **settings)

    def sweep(self, arguments: list[str]) -> None:
        space = {f"hydra.sweeper.params.{k}": f"{k}={v}" for k, v in (self.params or {}).items()}
        space.update({a: a for a in arguments})
        distributions, fixed = search_space(space)
        for name in fixed:
            distributions.pop(name, None)
        if _is_grid(self.sampler):
            grid = {name: self._to_grid_sampler_choices(d) for name, d in distributions.items()}
            self.sampler = self.sampler(grid)
            self.n_trials = min(self.n_trials, math.prod(len(v) for v in grid.values()))
        study = self._open_study()

        done = sum(t.state in FINISHED for t in study.trials)
        to_go = max(0, self.n_trials - done)
        log.info("study %s (%s): %d trials finished, %d to run (n_trials=%d)", study.study_name,
                 self.storage or "in memory", done, to_go, self.n_trials)
        if done and to_go:
            self.sampler.reseed_rng()  # a seeded sampler would repeat the first launch's trials
        self.job_idx = done  # Hydra's job numbers go on from the earlier launches'
        failed = ran = 0
        while ran < to_go and failed <= self.max_failure_rate * to_go:
            trials = [study.ask() for _ in range(min(self.n_jobs, to_go - ran))]
            overrides = self._configure_trials(trials, distributions, fixed)
            returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            for trial, ret in zip(trials, returns):
                trial.set_user_attr("job_dir", str(ret.working_dir))
                score = trial_score(ret)
                _tell(study, trial, score)
                if score is None:
                    failed += 1
                    log.warning("trial %d failed (its error: %s); the search goes on",
                                trial.number, Path(str(ret.working_dir)) / "error.txt")
            ran += len(trials)
        self._save_results(study)
        if ran and (failed == ran or failed > self.max_failure_rate * to_go):
            raise SearchFailed(
                f"{failed} of {ran} Optuna trials failed (hydra.sweeper.max_failure_rate="
                f"{self.max_failure_rate}); their errors: {self.config.hydra.sweep.dir}/*/error.txt")

    def _open_study(self) -> optuna.Study:
        """The study, made or loaded from `storage`; optuna's log goes through Hydra's."""
        optuna.logging.disable_default_handler()
        optuna.logging.enable_propagation()
        storage = self.storage
        if storage is not None:
            storage = str(storage)
            _check_storage_backend(storage)
            _make_sqlite_folder(storage)
        try:
            study = optuna.create_study(study_name=self.study_name, storage=storage,
                                        sampler=self.sampler, direction=self.direction,
                                        load_if_exists=True)
        except Exception as err:  # noqa: BLE001 -- optuna and SQLAlchemy raise many kinds
            if "Cannot overwrite study direction" in str(err):  # a stored study's own direction
                made = next(d for d in DIRECTIONS if d != self.direction)
                raise ConfigError(
                    f"hydra.sweeper.direction={self.direction}: study {self.study_name} in "
                    f"{storage} was made to {made}; use that, or another hydra.sweeper.study_name"
                ) from err
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"hydra.sweeper.storage={storage}: the study cannot be opened "
                              f"({reason})") from err
        return study

    def _save_results(self, study: optuna.Study) -> None:
        """`optimization_results.yaml` in the sweep folder: the best trial of the whole study."""
        if not any(t.state == TrialState.COMPLETE for t in study.trials):
            return
        best = study.best_trial
        log.info("best of %d trials: #%d, %s = %s", len(study.trials), best.number, best.params,
                 best.value)
        OmegaConf.save(OmegaConf.create({"name": "optuna", "best_params": best.params,
                                         "best_value": best.value}),
                       Path(self.config.hydra.sweep.dir) / "optimization_results.yaml")


def check_settings(*, direction: Any, n_trials: Any, n_jobs: Any, max_failure_rate: Any,
                   search_space: Any = None, **_: Any) -> str:
    """The sweeper's own settings checked, each refusal one line naming the key; the direction's
    name. Also called by the sweep callback before a launch writes anything (vae_text.run.sweep)."""
    name = getattr(direction, "name", direction)
    if not isinstance(name, str) or name not in DIRECTIONS:
        raise ConfigError(f"hydra.sweeper.direction={_show(direction)}: a trial returns one "
                          f"score; use minimize or maximize")
    for key, value in (("n_trials", n_trials), ("n_jobs", n_jobs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"hydra.sweeper.{key}={value}: must be a whole number >= 1")
    if isinstance(max_failure_rate, bool) or not isinstance(max_failure_rate, (int, float)) \
            or not 0.0 <= max_failure_rate <= 1.0:
        raise ConfigError(f"hydra.sweeper.max_failure_rate={max_failure_rate}: must be a share "
                          f"between 0 and 1 (0.5: up to half of the trials may fail)")
    if search_space is not None:
        raise ConfigError("hydra.sweeper.search_space: no longer read; give the search space "
                          "as hydra.sweeper.params (e.g. objective.kl_weight: interval(0.1, 1.0))")
    return name


def search_space(overrides: dict[str, str]) -> tuple[dict[str, BaseDistribution], dict[str, Any]]:
    """Optuna distributions and fixed values from `key=sweep` overrides, each given as
    {where it was written: override}; a bad one is refused naming where it was written."""
    parser = OverridesParser.create()
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, Any] = {}
    for where, text in overrides.items():
        try:
            (override,) = parser.parse_overrides([text])
            value = override.value()
            if override.is_interval_sweep() and value.start > value.end:
                raise ValueError(f"the interval is reversed; write interval({value.end}, "
                                 f"{value.start})")
            made = create_optuna_distribution_from_override(override)
        except (ValueError, AssertionError, NotImplementedError) as err:
            shown = where if where == text else f"{where}={text.partition('=')[2]}"
            raise ConfigError(f"{shown}: {err or 'not a search space Optuna can sample'}") from err
        if isinstance(made, BaseDistribution):
            distributions[override.get_key_element()] = made
        else:
            fixed[override.get_key_element()] = made
    return distributions, fixed


def trial_score(ret: JobReturn) -> float | None:
    """What a job returned, or None if it failed: it raised, or returned NaN (`run_job`'s mark
    of a failed job) or anything that is not a finite number."""
    if ret.status != JobStatus.COMPLETED:
        return None
    try:
        score = float(ret.return_value)
    except (TypeError, ValueError):
        return None
    return score if math.isfinite(score) else None


def _tell(study: optuna.Study, trial: optuna.Trial, score: float | None) -> None:
    """A finished trial told to the study: its score, or FAIL (and no score) if it failed."""
    try:
        if score is None:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, score)
    except RuntimeError as err:
        # the grid sampler stops the study once its grid is used up, which optuna allows only
        # inside `Study.optimize`; the trial is told before it does
        if not (isinstance(study.sampler, optuna.samplers.GridSampler) and "Study.stop" in str(err)):
            raise


def _check_storage_backend(storage: str) -> None:
    """optuna 2.x cannot read or write a study with SQLAlchemy 2 (a bare AssertionError)."""
    import sqlalchemy

    if int(optuna.__version__.split(".")[0]) < 3 and int(sqlalchemy.__version__.split(".")[0]) >= 2:
        raise ConfigError(
            f"hydra.sweeper.storage={storage}: optuna {optuna.__version__} needs SQLAlchemy < 2 "
            f"(installed: {sqlalchemy.__version__}); pip install \"vae_text[search]\" pins both")


def _make_sqlite_folder(storage: str) -> None:
    """The folder of a `sqlite:///path/to/study.db` storage, made when missing."""
    from sqlalchemy.engine.url import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(storage)
    except ArgumentError:
        return  # not a URL: optuna's refusal names it
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return
    folder = Path(url.database).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"hydra.sweeper.storage={storage}: cannot make its folder {folder} "
                          f"({err.strerror or err})") from err


def _is_grid(sampler: Any) -> bool:
    return isinstance(sampler, functools.partial) and sampler.func is optuna.samplers.GridSampler


def _show(value: Any) -> str:
    return str(OmegaConf.to_container(value)) if OmegaConf.is_config(value) else str(value)
