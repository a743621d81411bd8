"""Multi-process training with torchrun (DistributedDataParallel): one process per GPU.

`torchrun --nproc_per_node=N main.py ...` sets RANK / WORLD_SIZE / LOCAL_RANK; a
plain `python main.py` is a world of one and none of this does anything.
"""
import os
from dataclasses import dataclass
from typing import Any, List

import torch
import torch.distributed as dist

from utils.errors import UsageError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_world() -> World:
    """Join the process group that torchrun describes: NCCL on GPUs, gloo on the CPU.

    On GPUs each process first makes its own GPU (LOCAL_RANK) the current device and names it to
    the process group: the object collectives put their tensors on the current device, and with
    every process on cuda:0 NCCL fails or hangs.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if dist.is_initialized():
        return world
    if not torch.cuda.is_available():
        dist.init_process_group("gloo")
        return world
    if world.local_rank >= torch.cuda.device_count():
        raise UsageError(f"torchrun started more processes per node than this machine has GPUs "
                         f"({torch.cuda.device_count()}); lower --nproc_per_node")
    torch.cuda.set_device(world.local_rank)
    dist.init_process_group("nccl", device_id=torch.device("cuda", world.local_rank))
    return world


def close_world(world: World) -> None:
    if world.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(world: World, obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not world.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(world: World, obj: Any) -> List[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not world.enabled:
        return [obj]
    out: List[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def any_rank(world: World, flags: List[bool], device: torch.device) -> List[bool]:
    """Each flag true on every rank when it is true on any rank (a stop request, a non-finite loss)."""
    if not world.enabled:
        return list(flags)
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]
