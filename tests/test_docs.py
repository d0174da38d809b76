"""The project cites only what it contains: no file outside the repository, no tracker numbers.

A clone holds the code, configs, docs and results; a reader must be able to follow every reference.
The definitions live in docs/ (protocol, remedies, published numbers).
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITED = ["vae_text", "conf", "README.md", "docs", "results", "scripts"]  # what users read
PROJECT = CITED + ["tests", "notebooks", ".ci", "pyproject.toml", "data/README.md"]
SKIP = {"__pycache__", ".ruff_cache", ".pytest_cache", ".ipynb_checkpoints"}

OUTSIDE = re.compile("REFERENCE" + r"\.md|shared/")  # split so this file does not match itself
# a hash and a number name a ticket; Hydra's job list ("#N : ...") and a table's run labels ("| #N") do not
TRACKER = re.compile(r"\bissues?[ -]#?\d+|(?<![\w&/#])(?<!\| )#\d+\b(?! :)", re.IGNORECASE)


def text_files(roots: list[str]):
    for name in roots:
        path = ROOT / name
        for f in [path] if path.is_file() else sorted(path.rglob("*")):
            if f.is_file() and not SKIP & set(f.relative_to(ROOT).parts):
                try:
                    yield f, f.read_text(encoding="utf-8")
                except UnicodeDecodeError:  # figures
                    continue


def hits(pattern: re.Pattern, roots: list[str]) -> list[str]:
    return [f"{f.relative_to(ROOT)}:{n}: {line.strip()[:100]}"
            for f, text in text_files(roots) for n, line in enumerate(text.splitlines(), 1)
            if pattern.search(line)]


def test_no_file_outside_the_repository_is_cited():
    found = hits(OUTSIDE, CITED)
    assert not found, "cites a file a clone does not have (use docs/):\n" + "\n".join(found)


def test_no_tracker_issue_numbers():
    found = hits(TRACKER, PROJECT)
    assert not found, "names a tracker issue (say what, not which ticket):\n" + "\n".join(found)


def test_the_docs_exist_and_are_linked():
    for name in ("protocol.md", "remedies.md", "published.md"):
        assert (ROOT / "docs" / name).read_text().startswith("# ")
        assert f"docs/{name}" in (ROOT / "README.md").read_text()


def test_the_patterns_catch_what_they_should():
    n = "9"  # built, so that this file holds no tracker number itself
    bad = ["see ../" + "shared/REFERENCE" + ".md §2", f"fixes issue {n}", f"the Issue-{n}{n} rows",
           f"(#{n})", f"issue #{n}"]
    good = ["ratio #", "color #1f77b4", "&#8212;", "the issue of collapse", "step 9",
            f"[HYDRA]   #{n} : +experiment=smoke", f"| #{n} | 0.5 |"]
    assert all(OUTSIDE.search(s) or TRACKER.search(s) for s in bad)
    assert not any(OUTSIDE.search(s) or TRACKER.search(s) for s in good)
