"""Parts from the user's own code: the modules named in `plugins=[my_lab.parts]` and the entry
points of group `vae_text.run.parts` of installed distributions are imported before a config's names
are checked, so that the parts they register (`PRIORS["scaled_normal"] = ScaledNormal`, ...) are
named like built-in ones. Importing is all this does: registration stays the plugin's own explicit
registry entries.

    # pyproject.toml of the user's package
    [project.entry-points."vae_text.parts"]
    my_lab = "my_lab.parts"
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterable
from importlib.metadata import entry_points

from vae_text.core.errors import ConfigError

GROUP = "vae_text.parts"


def load(modules: Iterable[str] = ()) -> None:
    """Import the installed entry points (once) and `modules`; Python imports a module once, so
    calling this again (a sweep's next job, a checkpoint's own plugins) costs nothing."""
    load_entry_points()
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is None or not (name == err.name or name.startswith(f"{err.name}.")):
                raise  # the plugin itself imports something missing: its traceback says what
            raise ConfigError(f"plugins: no module named {name!r}: install it, or put the folder "
                              f"that holds it on PYTHONPATH") from None


@functools.cache
def load_entry_points() -> tuple[str, ...]:
    """Import every entry point of group `vae_text.parts` (each names a module); returns their
    names. Cached: entry points do not change while a process runs."""
    found = sorted(entry_points(group=GROUP), key=lambda ep: ep.name)
    for ep in found:
        ep.load()
    return tuple(ep.name for ep in found)
