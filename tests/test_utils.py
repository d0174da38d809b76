import json
import subprocess
import sys

import pytest
import torch

from vae_text.core.errors import ConfigError, OutputError
from vae_text.core.utils import CONFIG_PATH, atomic_write, cli, next_number, pick_device, write_json


def test_atomic_write_text_bytes_and_writer_leave_no_temp_file(tmp_path):
    target = tmp_path / "deep" / "er" / "out.txt"  # missing parents are made
    atomic_write(target, "héllo\n")
    assert target.read_bytes() == "héllo\n".encode()
    atomic_write(target, b"\x00\x01\xff")
    assert target.read_bytes() == b"\x00\x01\xff"
    atomic_write(target, lambda f: torch.save({"w": torch.arange(7)}, f))
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.arange(7))
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_atomic_write_keeps_the_old_content_when_the_write_fails(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old\n")

    def half_then_crash(f):
        f.write(b"new and torn")
        raise RuntimeError("disk full")

    with pytest.raises(OutputError, match=r"results.json: cannot write it \(disk full\)"):
        atomic_write(target, half_then_crash)  # one line naming the file and the cause
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
    with pytest.raises(TypeError):  # a bad payload fails the same way
        atomic_write(tmp_path / "absent.txt", 3.5)
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_write_json_round_trips_with_a_final_newline(tmp_path):
    data = {"rec": 91.25, "au": 3, "kl_per_dim": [0.5, 0.0], "split": "test"}
    path = write_json(tmp_path / "eval_test.json", data)
    text = path.read_text()
    assert text.endswith("}\n") and json.loads(text) == data
    write_json(path, {"best": float("inf"), "curve": [1.5, float("nan")]})  # JSON has neither
    assert json.loads(path.read_text()) == {"best": None, "curve": [1.5, None]}


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device='cuda:1' but CUDA is not available"):
            pick_device("cuda:1")


def test_cli_turns_user_errors_into_one_line_and_status_2(tmp_path):
    script = tmp_path / "entry.py"
    script.write_text(
        "import sys\n"
        "from vae_text.core.errors import DataError\n"
        "from vae_text.core.utils import cli\n"
        "@cli(also=(ValueError,))\n"
        "def main(kind):\n"
        "    if kind == 'data': raise DataError('data/x.txt: file not found')\n"
        "    if kind == 'value': raise ValueError('bad interpolation')\n"
        "    if kind == 'bug': raise KeyError('a bug keeps its traceback')\n"
        "    return 7\n"
        "print(main(sys.argv[1]))\n")
    runs = {k: subprocess.run([sys.executable, str(script), k], capture_output=True, text=True)
            for k in ("data", "value", "bug", "fine")}
    assert (runs["data"].returncode, runs["data"].stderr) == (2, "error: data/x.txt: file not found\n")
    assert (runs["value"].returncode, runs["value"].stderr) == (2, "error: bad interpolation\n")
    assert runs["bug"].returncode == 1 and "Traceback" in runs["bug"].stderr
    assert (runs["fine"].returncode, runs["fine"].stdout) == (0, "7\n")
    assert cli(lambda x: x + 1)(2) == 3


def test_config_path_finds_the_configs():
    """From source: the checkout's conf/; installed (wheel or editable): pkg://vae_text.conf."""
    if CONFIG_PATH.startswith("pkg://"):
        from importlib.resources import files

        root = files(CONFIG_PATH.removeprefix("pkg://"))
    else:
        from pathlib import Path

        root = Path(CONFIG_PATH)
    names = {"train.yaml", "evaluate.yaml", "sample.yaml"}
    assert names <= {p.name for p in root.iterdir()}
    assert root.joinpath("experiment", "smoke.yaml").is_file()


def test_next_number_goes_past_the_highest_kept_piece():
    assert next_number([], first=1) == 1 and next_number(iter(()), first=0) == 0
    assert next_number(["1", "2"], first=1) == 3
    assert next_number(["3", "x", "10", ""], first=1) == 11  # a removed 1, 2: never reused
    assert next_number(["0"], first=0) == 1
