"""The wheel's contract: every config ships inside it, and every console script exists."""

import importlib
import subprocess
import sys

import pytest

from conftest import ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_config_folder_ships_as_a_package():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    conf = ROOT / "conf"
    wanted = {"vae_text.conf"}
    for path in conf.rglob("*.yaml"):  # its folder and every folder between it and conf/
        parts = path.parent.relative_to(conf).parts
        wanted |= {".".join(("vae_text", "conf", *parts[:i])) for i in range(1, len(parts) + 1)}
    assert wanted <= listed, f"add {sorted(wanted - listed)} to [tool.setuptools] packages"
    gone = sorted(p for p in listed if p.startswith("vae_text.conf") and not (ROOT / "conf").joinpath(
        *p.split(".")[2:]).is_dir())
    assert not gone, f"remove {gone} from [tool.setuptools] packages: no such folder in conf/"


def test_every_code_package_ships():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    code = {".".join(p.parent.relative_to(ROOT).parts) for top in ("vae_text", "hydra_plugins")
            for p in (ROOT / top).rglob("__init__.py")}  # hydra_plugins: the Optuna search's sweeper
    assert code <= listed, f"add {sorted(code - listed)} to [tool.setuptools] packages"
    gone = sorted(p for p in listed if not p.startswith("vae_text.conf") and p not in code)
    assert not gone, f"remove {gone} from [tool.setuptools] packages: no such package"
    assert PYPROJECT["tool"]["setuptools"]["package-dir"]["vae_text.conf"] == "conf"


def test_console_scripts_exist_and_python_m_lists_them():
    scripts = PYPROJECT["project"]["scripts"]
    assert set(scripts) == {"vae-text-train", "vae-text-eval", "vae-text-sample", "vae-text-report"}
    for target in scripts.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), target
    out = subprocess.run([sys.executable, "-m", "vae_text"], capture_output=True, text=True,
                         check=True).stdout
    for script, target in scripts.items():
        assert f"{script} " in out and target.split(":")[0] in out
