"""The README is a front page whose every command works: the set-up is CI's, the first run is run
by tests/test_newcomer.py, the training commands compose, the report and the Python snippets run,
and every link into docs/ resolves. The Python snippets of docs/sampling.md run too."""

import re
import shlex

import pytest

from conftest import ROOT, compose_cfg
from vae_text.report import main as report_main
from vae_text.run.parts import train_settings

README = ROOT / "README.md"
PYPROJECT = (ROOT / "pyproject.toml").read_text()
SNIPPET_FILES = [README, ROOT / "docs" / "sampling.md"]
FIRST_RUN = "## First run"


def python_snippets() -> list[tuple[str, str]]:
    return [(f.name, s) for f in SNIPPET_FILES
            for s in re.findall(r"```python\n(.*?)```", f.read_text(), flags=re.S)]


def shell_commands(text: str) -> list[list[str]]:
    """The commands of a markdown text's bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                commands.append(argv)
    return commands


def first_run_commands() -> list[list[str]]:
    """The commands of the README's first run, in its order."""
    section = README.read_text().split(FIRST_RUN, 1)[1].split("\n## ", 1)[0]
    return shell_commands(section)


def test_readme_is_a_front_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    sections = re.findall(r"^## (.+)$", text, flags=re.M)
    assert sections[0] == "Set-up" and sections[1].startswith(FIRST_RUN[3:])
    assert shell_commands(text)[2][:3] == ["python", "-m", "vae_text.train"]  # the smoke run, first


def test_every_link_resolves():
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links {target}"


def test_every_doc_is_linked_from_the_readme():
    text = README.read_text()
    for doc in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{doc.name})" in text, f"README does not link docs/{doc.name}"


def test_the_set_up_is_what_ci_runs():
    setup = [c for c in shell_commands(README.read_text()) if c[:2] == ["pip", "install"]]
    ci = (ROOT / ".ci" / "run").read_text()
    assert setup[:2] == [["pip", "install", "torch==2.13.0"], ["pip", "install", "-e", ".[dev]"]]
    assert 'pip install --quiet "torch==2.13.0"' in ci and 'pip install --quiet -e ".[dev]"' in ci
    for command in setup[2:]:
        extra = re.fullmatch(r"\.\[(\w+)\]", command[-1])
        assert command[:3] == ["pip", "install", "-e"] and extra, command
        assert f"\n{extra[1]} = [" in PYPROJECT.split("[project.optional-dependencies]")[1], command


def test_every_readme_command_is_checked(tmp_path, tiny_run):
    """Each command is run here or by test_newcomer.py, or composed with the real configs."""
    first_run = first_run_commands()
    markers = set(re.findall(r'^\s*"(\w+):', PYPROJECT.split("markers = [")[1], flags=re.M))
    for argv in shell_commands(README.read_text()):
        if argv in first_run or argv[:2] == ["pip", "install"]:
            continue  # test_newcomer.py runs the first run; the set-up is CI's (above)
        if argv[:3] == ["python", "-m", "vae_text.train"]:
            overrides = [a for a in argv[3:] if a != "-m" and not a.startswith("hydra.")]
            for value in next((o.split("=", 1)[1].split(",") for o in overrides if "," in o), [None]):
                swept = [o.split("=")[0] + f"={value}" if "," in o else o for o in overrides]
                train_settings(compose_cfg(swept))  # composed and checked as training checks it
        elif argv[:3] == ["python", "-m", "vae_text.report"]:
            folders = [str(tiny_run) if not a.startswith("-") else a for a in argv[3:]]  # its options kept
            assert report_main([*folders, "--out", str(tmp_path / "report")]) == 0
            assert (tmp_path / "report.md").is_file()
        elif argv[:2] == ["jupyter", "execute"]:
            assert (ROOT / argv[2]).is_file()  # tests/test_notebook_paths.py executes it
        elif argv[0] == "pytest":
            expression = argv[argv.index("-m") + 1] if "-m" in argv else ""
            assert set(re.findall(r"\w+", expression)) - {"not", "and", "or"} <= markers, argv
        else:
            pytest.fail(f"the README's command {shlex.join(argv)} is not checked by a test")


def test_snippets_exist():
    assert [name for name, _ in python_snippets()].count("README.md") >= 1
    # the only snippets left untested are the hub's, which need the network
    for f in SNIPPET_FILES:
        skipped = re.findall(r"```python notest\n(.*?)```", f.read_text(), flags=re.S)
        assert all("<user>/" in snippet for snippet in skipped)


@pytest.mark.parametrize("index", range(len(python_snippets())))
def test_python_snippet_runs(index, tiny_run, tmp_path, monkeypatch):
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "smoke").symlink_to(tiny_run)  # where the README's first run puts it
    monkeypatch.setenv("VAE_TEXT_CHECKPOINT", str(tiny_run))
    monkeypatch.chdir(tmp_path)  # exports/ and the like land here
    name, snippet = python_snippets()[index]
    exec(compile(snippet, f"{name} python snippet {index}", "exec"), {})
    if "save_pretrained(" in snippet:
        assert (tmp_path / "exports" / "ptb_vae" / "README.md").is_file()


def test_license_and_citation():
    import yaml

    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT"
    assert {"message", "title", "authors", "version"} <= cff.keys()
    assert f'version = "{cff["version"]}"' in (ROOT / "pyproject.toml").read_text()
