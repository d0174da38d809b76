"""Property-based tests of every config key: any value either passes the checks or fails with one
error naming the key (OmegaConf's type check at compose, or the dataclasses' range checks);
never another exception, never a NaN or infinity let through."""

from __future__ import annotations

import copy
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from conftest import CONF, compose_cfg, tiny_overrides
from vae_text.config import (
    EvaluateConfig,
    SampleConfig,
    compose_error,
    is_compose_error,
    section,
)
from vae_text.core.errors import ConfigError
from vae_text.run.parts import train_settings

FAST = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# what a command line can hand a key: numbers (NaN and infinities too), booleans, null, words,
# lists, mappings
values = st.one_of(
    st.integers(-(10**12), 10**12), st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0]),
    st.booleans(), st.none(), st.text(max_size=8), st.sampled_from(["nan", "inf", "1e3", "abc", ""]),
    st.lists(st.one_of(st.integers(-5, 5), st.floats(), st.text(max_size=3)), max_size=3),
    st.dictionaries(st.text(min_size=1, max_size=4), st.integers(-3, 3), max_size=2),
)


def leaves(node, prefix: str = "") -> list[str]:
    """Every key of a composed config down to its values (open dicts and lists as one key)."""
    out = []
    for key in node:
        path = f"{prefix}{key}"
        child = node._get_node(key)
        if isinstance(child, DictConfig) and len(child) and child._get_flag("struct") is not False:
            out += leaves(child, f"{path}.")
        else:
            out.append(path)
    return out


def entries(corpus) -> dict[str, tuple]:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        evaluate = compose("evaluate", overrides=["checkpoint=run"])
        sample = compose("sample", overrides=["checkpoint=run"])
    return {"train": (compose_cfg(tiny_overrides(corpus)), train_settings),
            "evaluate": (evaluate, lambda c: section(EvaluateConfig, c, "")),
            "sample": (sample, lambda c: section(SampleConfig, c, ""))}


def names_key(message: str, key: str) -> bool:
    """The message names the key, or the field that holds it (`optim.betas` for `optim.betas[1]`,
    `data.files` for `data.files.train`)."""
    parts = key.split("[")[0].split(".")
    return any(".".join(parts[:n]) in message for n in range(len(parts), 0, -1)
               if n >= min(2, len(parts)))


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["train", "evaluate", "sample"])
def test_every_key_on_any_value_passes_or_fails_in_one_line_naming_it(entry, corpus_dir):
    base, build = entries(corpus_dir)[entry]
    keys = leaves(base)
    assert len(keys) > (60 if entry == "train" else 10)

    @FAST
    @given(st.sampled_from(keys), values)
    def check(key, value):
        cfg = copy.deepcopy(base)
        try:
            OmegaConf.update(cfg, key, value, merge=True)  # what a command-line override does
            settings_ = build(cfg)
        except (OmegaConfBaseException, AttributeError) as err:  # hydra_entry prints compose_error(...)
            if not is_compose_error(err):
                raise
            message = compose_error(err)
        except ConfigError as err:
            message = str(err)
        else:
            assert not _non_finite(OmegaConf.to_container(cfg, resolve=True)), (key, value)
            assert settings_ is not None
            return
        assert "\n" not in message and names_key(message, key), (key, value, message)

    check()


def _non_finite(x) -> bool:
    if isinstance(x, float):
        return not math.isfinite(x)
    if isinstance(x, (dict, DictConfig)):
        return any(_non_finite(v) for v in x.values())
    if isinstance(x, (list, tuple, ListConfig)):
        return any(_non_finite(v) for v in x)
    return False
