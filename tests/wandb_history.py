"""Read the history of an offline wandb run from its `.wandb` file (LevelDB log format of
wandb `Record` protobufs), so a test can check what was really recorded, with no network."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

BLOCK, HEADER = 32768, 7  # LevelDB log blocks; each chunk: crc32 (4), length (2), type (1)


def records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    pos, parts = 7, []  # the file opens with wandb's 7-byte ":W&B" header
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos: pos + HEADER])
        if kind == 0 and length == 0:  # zero padding to the end of the block
            pos += left
            continue
        parts.append(data[pos + HEADER: pos + HEADER + length])
        pos += HEADER + length
        if kind in (1, 4):  # FULL or LAST chunk: a whole record
            record = pb.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record


def read(run_dir: Path, wait: float = 20.0) -> list[dict]:
    """Every history row of the single offline wandb run under `run_dir`.

    wandb's service process may still be writing the file when `finish()` has returned (seen on
    a loaded machine: an empty history one run in four), so wait until its exit record is there.
    """
    (path,) = Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")
    deadline = time.monotonic() + wait
    while True:
        kinds = [r.WhichOneof("record_type") for r in records(path)]
        if "exit" in kinds or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def run_info(run_dir: Path) -> dict:
    """Name, group and tags of the offline wandb run under `run_dir`."""
    (path,) = Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")
    for record in records(path):
        if record.WhichOneof("record_type") == "run":
            return {"name": record.run.display_name, "group": record.run.run_group,
                    "tags": list(record.run.tags)}
    raise AssertionError(f"{path}: no run record")
