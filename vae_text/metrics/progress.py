"""A resumable IW-NLL: the per-sentence estimates of an evaluation, written as they are made, so
that an evaluation cut short (a session's end, a preempted job, a kill) goes on where it stopped.

The importance-weighted bound at K = 500 is nearly all of an evaluation's time (hours for the PTB
test split on one CPU thread). A sentence's estimate depends only on the weights, the sentence,
K, the seed and the batching (its posterior noise is seeded from its own ids: vae_text.metrics),
so the estimates made before an interruption are the ones an uninterrupted run makes, bit for bit,
and are kept instead of recomputed.

The file (`<output>.iw.pt` beside the evaluation's JSON; per rank under DDP) holds a fingerprint
of all of that (a hash of the weights and the split's token ids, K, seed, batch size, memory_mb,
device, rank and world) and the estimates of the batches done. A file whose fingerprint differs
(other weights, other settings) is set aside with a log line and replaced; the caller removes the
file once the evaluation's results are written.
"""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
from pathlib import Path

import torch
from torch import Tensor

from vae_text.core.utils import atomic_write
from vae_text.data.batches import Split

log = logging.getLogger("vae_text")


def progress_file(output: Path, rank: int = 0, world: int = 1) -> Path:
    """Where the evaluation written to `output` (a JSON file) keeps its IW-NLL progress."""
    return output.with_name(output.stem + (".iw.pt" if world == 1 else f".iw.rank{rank}-of-{world}.pt"))


def _raw_bytes(tensor: torch.Tensor) -> bytes:
    """The tensor's memory as bytes, for any dtype (numpy has no bfloat16)."""
    return tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()


def fingerprint(model: torch.nn.Module, split: Split, settings: dict) -> str:
    """A hash of the model's weights, the split's token ids and the evaluation settings."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(_raw_bytes(tensor))
    for tensor in (split.ids, split.offsets):
        h.update(_raw_bytes(tensor))
    h.update(repr(sorted(settings.items())).encode())
    return h.hexdigest()


class IWProgress:
    """The estimates of the batches done, keyed by each sentence's position in the split."""

    def __init__(self, path: Path, key: str):
        self.path, self.key = path, key
        self.values: dict[int, float] = {}
        self.order: list[int] = []
        if not path.is_file():
            return
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved["key"] != key:
                log.info("IW-NLL progress %s belongs to other weights or settings: starting over", path)
                return
            self.order = saved["index"].tolist()
            self.values = dict(zip(self.order, saved["values"].tolist()))
        except (OSError, RuntimeError, EOFError, KeyError, TypeError, ValueError,
                pickle.UnpicklingError) as err:  # a torn or foreign file costs only its head start
            log.info("IW-NLL progress %s is unreadable (%s): starting over", path, err)
            return
        log.info("IW-NLL: %d sentences already estimated in %s, going on from there",
                 len(self.values), path)

    def lookup(self, index: Tensor) -> Tensor | None:
        """The batch's estimates (float64, in its order), or None if it is not done."""
        if not self.values or any(i not in self.values for i in index.tolist()):
            return None
        return torch.tensor([self.values[i] for i in index.tolist()], dtype=torch.float64)

    def add(self, index: Tensor, values: Tensor) -> None:
        """Record a batch's estimates and write the file (atomically)."""
        for i, v in zip(index.tolist(), values.double().cpu().tolist()):
            if i not in self.values:
                self.order.append(i)
            self.values[i] = v
        blob = {"key": self.key, "index": torch.tensor(self.order, dtype=torch.long),
                "values": torch.tensor([self.values[i] for i in self.order], dtype=torch.float64)}
        buffer = io.BytesIO()
        torch.save(blob, buffer)
        atomic_write(self.path, buffer.getvalue())
