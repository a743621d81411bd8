"""Multi-process training with torchrun (DistributedDataParallel): one process per GPU.

`torchrun --nproc_per_node=N main.py ...` sets RANK / WORLD_SIZE / LOCAL_RANK; so does
`srun main.py ...` on a Slurm cluster, through `slurm_environment` (each task a process of
the group, the first node of the step its rendezvous); a plain `python main.py` is a world
of one and none of this does anything.
"""
import json
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, TypeVar

import torch
import torch.distributed as dist

from utils.errors import UsageError

T = TypeVar("T")


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


def first_host(nodelist: str) -> str:
    """The first host of a Slurm host list: 'gpu[03-05,07],cpu1' -> 'gpu03', 'a,b' -> 'a'."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        raise UsageError(f"cannot read the Slurm host list {nodelist!r}")
    prefix, ranges = match.groups()
    return prefix + (ranges.split(",")[0].split("-")[0] if ranges else "")


def slurm_environment(env=None) -> dict:
    """torchrun's variables from Slurm's, for the tasks of an `srun` step that no torchrun started: RANK is
    SLURM_PROCID, WORLD_SIZE the step's task count, LOCAL_RANK SLURM_LOCALID, MASTER_ADDR the step's first
    node and MASTER_PORT one derived from the job id (each unless already set). Empty outside an srun step
    of several tasks (a batch script's own process is no task of a step) and under torchrun."""
    env = os.environ if env is None else env
    tasks = int(env.get("SLURM_STEP_NUM_TASKS", "1") or 1)
    if "WORLD_SIZE" in env or "SLURM_PROCID" not in env or tasks <= 1:
        return {}
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "localhost"
    return {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": str(tasks), "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
            "MASTER_ADDR": env.get("MASTER_ADDR") or first_host(nodes),
            "MASTER_PORT": env.get("MASTER_PORT") or rendezvous_port(env.get("SLURM_JOB_ID", ""))}


def rendezvous_port(job_id: str) -> str:
    """The port a cluster job's process group meets on, the same for all its tasks: 15000 + its id's digits
    modulo 20000 (jobs on one node at once have different ids)."""
    return str(15000 + int("".join(c for c in str(job_id) if c.isdigit()) or 0) % 20000)


def init_world() -> World:
    """Join the process group that torchrun describes: NCCL on GPUs, gloo on the CPU.

    On GPUs each process first makes its own GPU (LOCAL_RANK) the current device and names it to
    the process group: the object collectives put their tensors on the current device, and with
    every process on cuda:0 NCCL fails or hangs. The group's keys go under a prefix of its own
    (`group_store`): torchrun keeps one store for every restart, and a restarted group could otherwise
    read the addresses the lost group published and hang on them.
    """
    os.environ.update(slurm_environment())  # under srun, the variables torchrun would have set
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if dist.is_initialized():
        return world
    if not torch.cuda.is_available():
        dist.init_process_group("gloo", store=group_store(), rank=world.rank, world_size=size)
        return world
    if world.local_rank >= torch.cuda.device_count():
        raise UsageError(f"torchrun started more processes per node than this machine has GPUs "
                         f"({torch.cuda.device_count()}); lower --nproc_per_node")
    torch.cuda.set_device(world.local_rank)
    dist.init_process_group("nccl", store=group_store(), rank=world.rank, world_size=size,
                            device_id=torch.device("cuda", world.local_rank))
    return world


def group_store() -> dist.Store:
    """torchrun's store (env://) under a prefix that this worker group's processes agree on and no earlier
    group of the job used (`agreed_name`)."""
    store, rank, size = next(dist.rendezvous("env://"))
    return dist.PrefixStore(f"glmc/group-{agreed_name(store, rank, size)}", store)


def agreed_name(store: dist.Store, rank: int, size: int, poll: float = 0.05) -> str:
    """A name for this process group that all its processes agree on and no lost group of the job used,
    read from a store that outlives worker groups (torchrun's agent store keeps every restart's keys).

    Each process says hello under its rank with a name of its own; rank 0 publishes its name with the
    hellos it has read, again and again, until every rank has acknowledged a list that holds its own
    hello. A hello or a publication left by a lost group never names a living process, so nobody takes
    it; the agents' restart counts, which can differ between nodes, play no part."""
    mine = uuid.uuid4().hex
    store.set(f"glmc/hello/{rank}", mine)
    if rank == 0:
        acks = [f"glmc/{mine}/ack/{r}" for r in range(1, size)]
        while True:
            hellos = [store.get(f"glmc/hello/{r}").decode() for r in range(size)]  # waits for each rank's first
            store.set("glmc/leader", json.dumps({"name": mine, "hellos": hellos}))
            if store.check(acks):
                return mine
            time.sleep(poll)
    while True:
        leader = json.loads(store.get("glmc/leader").decode())
        if leader["hellos"][rank] == mine:
            store.set(f"glmc/{leader['name']}/ack/{rank}", "1")
            return leader["name"]
        time.sleep(poll)


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


def main_rank_first(world: World, fn: Callable[[], T], what: str) -> T:
    """`fn()` on rank 0 first, then on the other ranks, which wait: what rank 0 downloads or writes (CIFAR
    when it is missing), the others find in place, and no two processes write the same files. When rank 0
    fails, the others stop too, naming its error."""
    if not world.enabled:
        return fn()
    if world.is_main:
        try:
            result = fn()
        except BaseException as exc:
            broadcast_object(world, f"{exc.__class__.__name__}: {exc}")
            raise
        broadcast_object(world, None)
        return result
    failure = broadcast_object(world, None)
    if failure:
        raise UsageError(f"process 0 failed while {what} ({failure.splitlines()[0]})")
    return fn()


def elastic_job() -> Optional[str]:
    """A name that a torchrun job's worker groups share across restarts (`--max_restarts`): the host, the
    elastic agent's process id and the rendezvous id; None outside torchrun. Single-node jobs only:
    on several nodes rank 0 may be on another node after a restart."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    return f"{socket.gethostname()}-{os.getppid()}-{os.environ['TORCHELASTIC_RUN_ID']}"

