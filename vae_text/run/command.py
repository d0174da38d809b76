"""What every command (`vae-text-train`, `-eval`, `-sample`) does around Hydra: the ConfigStore
filled before Hydra composes (the schemas, the options made from registries, the installed
plugins' parts), `--help`, and a config that does not compose reported as one line."""

from __future__ import annotations

import functools
import os
import sys
import typing
from typing import Any

from vae_text.config import compose_error, is_compose_error
from vae_text.config.extras import missing_extra
from vae_text.config.help import entry_help, module_of, wants_help
from vae_text.run.parts import register


def hydra_entry(main: typing.Callable[[], Any]) -> typing.Callable[[], Any]:
    """The outermost decorator of a `@hydra.main` entry point: fills the ConfigStore
    (`vae_text.run.parts.register`), and reports a config that does not compose (a misspelt key, a
    wrong type, an unknown option) as one line `error: ...` on stderr with exit status 2, where
    Hydra alone prints several lines; so is an option whose plugin comes with an extra that is not
    installed (vae_text.config.extras).

    HYDRA_FULL_ERROR=1 is how Hydra hands its exception to the caller instead of printing it; a
    user who set it keeps the full traceback.
    """

    @functools.wraps(main)
    def wrapper() -> Any:
        from hydra.errors import HydraException

        if (missing := missing_extra(sys.argv[1:])) is not None:  # before Hydra's raw error
            print(f"error: {missing}", file=sys.stderr)
            sys.exit(2)
        register()
        _register_search_sweeper()
        if wants_help(sys.argv[1:]):  # the command's own keys and comments (vae_text.config.help)
            print(entry_help(module_of(main)))
            return None
        before = os.environ.get("HYDRA_FULL_ERROR")
        os.environ["HYDRA_FULL_ERROR"] = "1"
        try:
            return main()
        except (HydraException, AttributeError) as err:
            if before == "1" or not is_compose_error(err):
                raise
            print(f"error: {compose_error(err)}", file=sys.stderr)
            sys.exit(2)
        finally:
            if before is None:
                os.environ.pop("HYDRA_FULL_ERROR", None)
            else:
                os.environ["HYDRA_FULL_ERROR"] = before

    return wrapper


def _register_search_sweeper() -> None:
    """Hydra finds plugins by listing the `hydra_plugins` folders, which the import hook of an
    editable install (`pip install -e .`) cannot list: vae_text's own sweeper (the Optuna search,
    `hydra_plugins.vae_text_search`) is registered by name."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.vae_text_search import OptunaSearchSweeper

    Plugins.instance().register(OptunaSearchSweeper)
