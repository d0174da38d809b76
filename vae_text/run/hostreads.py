"""Counting what a training step would make a GPU wait for, on any device, the CPU included.

A *host read* is a call that needs a tensor's value on the host: on CUDA it blocks the host until
the GPU has run everything queued before it, so the next step cannot be queued meanwhile. On the
CPU every tensor is already a host tensor and nothing waits, so the counter counts the calls that
*would* wait on a device, whatever the device is:

- `aten._local_scalar_dense`: `.item()`, `float(t)`, `int(t)`, `bool(t)`, `if t:`;
- `aten.is_nonzero` and `aten.equal`: a tensor's truth, `torch.equal`;
- a copy from another device to the CPU: `aten._to_copy` with `device=cpu`, `aten.copy_` into a
  CPU tensor;
- Python-side reads that never reach the dispatcher on a CPU tensor: `Tensor.tolist`,
  `Tensor.cpu`, `Tensor.numpy`.

One blind spot on the CPU: `t.to("cpu", dtype)` of a CPU tensor cannot be told from
`t.to(other.device, dtype)` (both are `_to_copy(device=cpu)`), so neither is counted there; write
a host copy as `.cpu()`, which is counted everywhere.

Tensors that stay on the host on every device are not counted: a read of one named in `host`
(by storage) is free on CUDA too (e.g. a batch's lengths before it is moved). Operators are
counted beside: every call that reaches the dispatcher under the mode.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
READS = {aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default}
PYTHON_READS = ("tolist", "cpu", "numpy")


class HostReads(TorchDispatchMode):
    """`with HostReads() as c: ...` then `c.reads` (host reads), `c.ops` (operators) and
    `c.where` (reads by name)."""

    def __init__(self, host: Iterable[Tensor] = ()):
        super().__init__()
        self.host = {t.untyped_storage().data_ptr() for t in host}
        self.reads, self.ops, self.where = 0, 0, Counter()
        self._saved: dict[str, object] = {}

    def __enter__(self):
        for name in PYTHON_READS:  # the Python-side reads: wrapped while the mode is on
            original = self._saved[name] = getattr(Tensor, name)
            setattr(Tensor, name, self._counted(name, original))
        return super().__enter__()

    def __exit__(self, *exc):
        for name, original in self._saved.items():
            setattr(Tensor, name, original)
        self._saved.clear()
        return super().__exit__(*exc)

    def _counted(self, name: str, original):
        def read(t: Tensor, *args, **kwargs):
            # on a device these reach aten._to_copy (counted there); on the CPU they reach nothing
            if t.device.type == "cpu" and not self._on_host(t):
                self._count(f"Tensor.{name}")
            return original(t, *args, **kwargs)
        return read

    def _on_host(self, t: Tensor) -> bool:
        return t.untyped_storage().data_ptr() in self.host

    def _count(self, what: str) -> None:
        self.reads += 1
        self.where[what] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        first = args[0] if args and isinstance(args[0], Tensor) else None
        if first is not None and not self._on_host(first) and self._reads(func, args, kwargs):
            self._count(str(func.overloadpacket.__name__))
        return func(*args, **kwargs)

    @staticmethod
    def _reads(func, args, kwargs) -> bool:
        if func in READS:
            return True
        if func.overloadpacket is aten._to_copy:
            device = kwargs.get("device")
            return (device is not None and torch.device(device).type == "cpu"
                    and args[0].device.type != "cpu")
        if func.overloadpacket is aten.copy_:  # copy_(cpu destination, source elsewhere)
            return args[0].device.type == "cpu" and args[1].device.type != "cpu"
        return False
