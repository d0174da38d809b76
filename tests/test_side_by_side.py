"""scripts/paper_runs.sh and scripts/ptb_results.sh run their runs side by side on a GPU (JOBS at
once) and one at a time (paper_runs) or two lanes (ptb_results) without one: checked with stand-ins
for nvidia-smi and python that record when each run starts and ends."""

import os
import subprocess

import pytest

from conftest import ROOT

FAKE_PYTHON = """#!/bin/bash
[ "$2" = vae_text.report ] && exit 0
echo "start $(date +%s.%N) $*" >> "$EVENTS"
sleep 0.8
echo "end $(date +%s.%N)" >> "$EVENTS"
"""


def most_at_once(events: list[str]) -> int:
    timeline = sorted((float(line.split()[1]), 1 if line.startswith("start") else -1) for line in events)
    running = most = 0
    for _, change in timeline:  # at a tie an end sorts first (-1 < 1): back-to-back runs do not overlap
        running += change
        most = max(most, running)
    return most


def run_script(tmp_path, script, names, gpu: bool, jobs: str | None):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(FAKE_PYTHON)
    (bin_dir / "nvidia-smi").write_text(f"#!/bin/bash\nexit {0 if gpu else 9}\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    events = tmp_path / "events"
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "EVENTS": str(events)}
    env.pop("JOBS", None)
    if jobs is not None:
        env["JOBS"] = jobs
    proc = subprocess.run(["bash", str(ROOT / "scripts" / script), str(tmp_path / "out"), *names],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = events.read_text().splitlines()
    assert sum(line.startswith("start") for line in lines) == len(names)
    return most_at_once(lines)


@pytest.mark.slow
@pytest.mark.parametrize("gpu, jobs, expected", [(True, "2", 2), (True, None, 4), (False, "3", 1)])
def test_paper_runs_share_a_gpu_up_to_jobs_at_once(tmp_path, gpu, jobs, expected):
    assert run_script(tmp_path, "paper_runs.sh", ["lm", "vae", "fb", "pretrain_fb"], gpu, jobs) == expected


@pytest.mark.slow
@pytest.mark.parametrize("gpu, jobs, expected", [(True, "3", 3), (False, None, 2)])
def test_ptb_results_runs_its_lanes_side_by_side(tmp_path, gpu, jobs, expected):
    names = ["ptb", "ptb_lm", "ptb_ae", "ptb_bn", "ptb_vmf"]
    assert run_script(tmp_path, "ptb_results.sh", names, gpu, jobs) == expected
