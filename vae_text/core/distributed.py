"""Data-parallel training with PyTorch's own engine: torchrun (or SLURM) starts one process per
device, `setup()` joins them, every rank takes its share of each global batch.

    torchrun --nproc_per_node=4 -m vae_text.train +experiment=ptb           # one node, 4 GPUs
    torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d \\
        --rdzv_endpoint=<host>:29500 -m vae_text.train +experiment=ptb       # two nodes

A plain `python -m vae_text.train` is the 1-process case of the same code: `Dist()` with world 1,
where every collective below is the identity.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from vae_text.core.errors import ConfigError
from vae_text.core.utils import pick_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 alone writes checkpoints, metrics and wandb, and shows progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def rows(self, n: int) -> slice:
        """This rank's contiguous share of n rows (shares differ by at most one; some may be empty)."""
        start = self.rank * n // self.world
        return slice(start, (self.rank + 1) * n // self.world)

    def sum_on_device(self, t: Tensor) -> Tensor:
        """`t` summed over ranks, element-wise, as a float64 copy on its own device with no
        gradient: the values in one process, an all_reduce on the device in several (gloo on CPU
        tensors, NCCL on CUDA ones). Nothing is read back to the host."""
        total = t.detach().to(torch.float64, copy=True)
        if self.active:
            dist.all_reduce(total)
        return total

    def gather(self, obj) -> list:
        """Every rank's `obj` (picklable), in rank order, on every rank."""
        if not self.active:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def _slurm_env() -> dict[str, str]:
    """torchrun's variables from SLURM's, inside an `srun` step (submitit runs its tasks that way)
    with one task per device. The batch script itself is no step: a plain `python` there stays
    one process whatever --ntasks says."""
    tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))
    if "SLURM_PROCID" not in os.environ or tasks <= 1:
        return {}
    env = {"RANK": os.environ["SLURM_PROCID"], "WORLD_SIZE": str(tasks),
           "LOCAL_RANK": os.environ.get("SLURM_LOCALID", "0")}
    if "MASTER_ADDR" not in os.environ:
        try:
            import submitit

            env["MASTER_ADDR"] = submitit.JobEnvironment().hostnames[0]
        except Exception:  # not a submitit job: the node srun was started from
            env["MASTER_ADDR"] = os.environ.get("SLURM_LAUNCH_NODE_IPADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:  # one port per job, so two jobs on a node do not collide
        env["MASTER_PORT"] = str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000)
    return env


def rank_device(requested: str, local_rank: int, local_world: int, gpus: int
                ) -> tuple[torch.device, str, str | None]:
    """The device and backend of one of `local_world` processes on a node with `gpus` visible
    GPUs, for the `device` setting `requested`; and a line saying why, when it is not the GPU
    that `auto` would have given a single process.

    One GPU per process (`cuda:<local rank>`, NCCL) when there are enough; otherwise `auto`
    trains every process on the CPU (gloo) and an explicit `cuda` is a ConfigError: a second
    process on one GPU would otherwise die with "invalid device ordinal".
    """
    device = torch.device("cuda" if requested == "auto" else requested)
    if device.type != "cuda":
        return device, "gloo", None
    if local_world <= gpus:
        return torch.device("cuda", local_rank), "nccl", None
    if requested != "auto":
        raise ConfigError(f"device={requested}: {local_world} processes on this node but {gpus} visible "
                          f"GPU(s); start at most {gpus} per node (torchrun --nproc_per_node) or set device=cpu")
    why = None if gpus == 0 else (
        f"device=auto: {local_world} processes on this node but {gpus} visible GPU(s): every process "
        f"trains on the CPU (gloo); start at most {gpus} per node (torchrun --nproc_per_node) to use them")
    return torch.device("cpu"), "gloo", why


def setup(requested: str) -> tuple[Dist, torch.device]:
    """Join the process group when started by torchrun (or as SLURM tasks), on the device and
    backend of `rank_device`; a single process gets `pick_device(requested)`.

    Returns this process's place and the device it trains on.
    """
    os.environ.update({k: v for k, v in _slurm_env().items() if k not in os.environ})
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), pick_device(requested)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    pick_device(requested)  # CUDA asked for where there is none: the ConfigError of one process
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device, backend, why = rank_device(str(requested), local_rank, local_world, gpus)
    if why and rank == 0:
        log.warning(why)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world)
    return Dist(rank, world, local_rank), device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def share(tensor: Tensor, d: Dist) -> Tensor:
    """This rank's rows of a global-batch tensor."""
    return tensor[d.rows(tensor.shape[0])]
