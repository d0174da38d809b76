"""Every Python snippet of the README runs as written (against a tiny trained checkpoint)."""

import re

import pytest

from conftest import ROOT, compose_cfg, tiny_overrides
from vae_text.train import train


def python_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_has_python_snippets():
    assert len(python_snippets()) >= 1
    # the only snippets left untested are the hub's, which need the network
    skipped = re.findall(r"```python notest\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert all("<user>/" in snippet for snippet in skipped)


@pytest.mark.parametrize("index", range(len(python_snippets())))
def test_readme_python_snippet_runs(index, corpus_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(compose_cfg(tiny_overrides(corpus_dir, "train.max_steps=4", "eval.iw_samples=2")), run)
    monkeypatch.setenv("VAE_TEXT_CHECKPOINT", str(run))
    monkeypatch.chdir(tmp_path)  # exports/ and the like land here
    exec(compile(python_snippets()[index], f"README.md python snippet {index}", "exec"), {})
    if "save_pretrained(" in python_snippets()[index]:
        assert (tmp_path / "exports" / "ptb_vae" / "README.md").is_file()


def test_license_and_citation():
    import yaml

    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT"
    assert {"message", "title", "authors", "version"} <= cff.keys()
    assert f'version = "{cff["version"]}"' in (ROOT / "pyproject.toml").read_text()
