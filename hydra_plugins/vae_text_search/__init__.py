"""vae_text's Optuna search as a Hydra sweeper (`hparams_search=ptb_optuna` sets
`hydra.sweeper._target_` to `OptunaSearchSweeper`).

Hydra instantiates a sweeper only from the `hydra_plugins` namespace, so this module is the
adapter and the search itself is `vae_text.run.search`. Hydra imports every plugin module at the
start of every command, with or without the `search` extra installed: nothing here imports optuna
or vae_text until a search is set up. A bad setting or a failed search ends the command with one
line (`vae_text.core.utils.cli`), as every entry point does.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

# alembic, which optuna imports (Hydra imports optuna when it builds the sweeper's sampler, before
# the sweeper exists), logs seven "setup plugin" lines at INFO on import: this module is imported
# earlier, by Hydra's plugin scan. It changes only alembic's own logger.
logging.getLogger("alembic").setLevel(logging.WARNING)


class OptunaSearchSweeper(Sweeper):
    """hydra-optuna-sweeper's settings (`hydra/sweeper: optuna`), run by `vae_text.run.search`."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.search: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        from vae_text.core.utils import cli
        from vae_text.run.search import OptunaSearch

        self.search = cli(OptunaSearch)(**self.settings)
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        from vae_text.core.utils import cli

        return cli(self.search.sweep)(arguments)
