"""No network and no corpus folder: one line at once, naming the key of the command that ran.

The hub is made unreachable the same way everywhere: HF_ENDPOINT points at a closed local port,
so the connection is refused at once whether or not this machine is online."""

import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from vae_text.core.errors import DataError
from vae_text.data.corpus import DataConfig, HubConfig
from vae_text.data.locate import resolve_data
from vae_text.data.online import hub_unreachable

CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens there
PTB_HUB = HubConfig(id="ptb-text-only/ptb_text_only", config="penn_treebank",
                    revision="refs/convert/parquet", column="sentence")


@pytest.fixture
def no_hub(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", CLOSED)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_train_without_network_or_data_fails_in_one_line_within_seconds(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(PYTHONPATH=str(ROOT), HF_ENDPOINT=CLOSED, HF_HOME=str(tmp_path / "hf"),
               WANDB_MODE="offline", OMP_NUM_THREADS="1")
    missing = tmp_path / "ptb"
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "vae_text.train", "+experiment=smoke",
                           f"data.dir={missing}", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    seconds = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-2000:]  # no retry warnings
    assert lines[0].startswith("error: data directory ") and "data.dir=<folder with them>" in lines[0]
    assert f"{CLOSED} is unreachable" in lines[0]
    assert seconds < 10, f"{seconds:.1f} s"
    assert not missing.exists() and not (tmp_path / "run").exists()  # nothing written


def test_evaluate_names_its_own_key_for_a_missing_corpus(tmp_path, no_hub):
    data = DataConfig(dir=str(tmp_path / "gone"), hub=PTB_HUB)
    with pytest.raises(DataError) as err:
        resolve_data(data, tmp_path / "run")
    assert "(or set data_dir=<folder with them>)" in str(err.value)
    assert "data.dir=" not in str(err.value) and "\n" not in str(err.value)


def test_a_reachable_source_is_not_refused(tmp_path, no_hub, monkeypatch):
    assert hub_unreachable(PTB_HUB.id) == f"{CLOSED} is unreachable: [Errno 111] Connection refused"
    assert hub_unreachable(str(tmp_path)) is None  # a local folder in the hub's layout
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_unreachable(PTB_HUB.id) is None  # `datasets` reads its cache


def test_a_datasets_corpus_with_the_hub_unreachable_reads_local_files_and_fails_fast_otherwise(
        tmp_path, no_hub):
    import datasets

    from vae_text.data.text import load_hf_lines

    offline_before = datasets.config.HF_HUB_OFFLINE  # read from the environment at import

    for split, n in (("train", 3), ("valid", 2), ("test", 4)):
        (tmp_path / f"{split}.txt").write_text("".join(f"{split} line {i}\n" for i in range(n)))
    files = {"train": str(tmp_path / "train.txt"), "valid": str(tmp_path / "valid.txt"),
             "test": str(tmp_path / "test.txt")}
    local = DataConfig(source="hf", name="text", data_files=files)
    assert [len(lines) for lines, _ in load_hf_lines(local).values()] == [3, 2, 4]
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load_hf_lines(DataConfig(source="hf", name="someone/not-cached-here"))
    assert time.monotonic() - start < 5
    assert str(err.value).startswith(f"data.name=someone/not-cached-here: loading it with `datasets` "
                                     f"failed ({CLOSED} is unreachable: [Errno 111] Connection refused, "
                                     f"and it is not in the `datasets` cache)")
    assert datasets.config.HF_HUB_OFFLINE == offline_before  # restored: a hub that answers later is asked


def test_hf_hub_offline_set_after_datasets_was_imported_is_honoured(tmp_path, monkeypatch):
    """`datasets` reads HF_HUB_OFFLINE once, at its import; a notebook that sets it later must
    still get the cache only: no request, one line at once (both the fetch of a missing corpus
    folder and a `datasets` corpus)."""
    import datasets

    from vae_text.data.text import load_hf_lines

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # as imported while online
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", CLOSED)  # were a request made, it would be refused, not hang
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load_hf_lines(DataConfig(source="hf", name="someone/not-cached-here"))
    assert "(HF_HUB_OFFLINE is set, and it is not in the `datasets` cache)" in str(err.value)
    with pytest.raises(DataError) as err:
        resolve_data(DataConfig(dir=str(tmp_path / "gone"), hub=PTB_HUB), tmp_path / "run")
    assert f"data directory {tmp_path / 'gone'} is missing and fetching {PTB_HUB.id}" in str(err.value)
    assert CLOSED not in str(err.value)  # the hub was not asked
    assert time.monotonic() - start < 5
    assert datasets.config.HF_HUB_OFFLINE is False  # restored
