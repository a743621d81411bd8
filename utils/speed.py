"""CPU threads, mixed precision, channels_last and DistributedDataParallel wrapping (torch.compile:
glmc/train_step.py)."""
import contextlib
import os
import time
from typing import Optional, Tuple

import torch
from torch import nn

from utils.distributed import World

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Set beside OMP_NUM_THREADS by a launcher (the sweep) to say why it chose that count; the run prints it.
THREADS_REASON = "GLMC_THREADS_REASON"


def idle_cores(interval: float = 0.2) -> Optional[float]:
    """How many of the machine's cores the other processes leave idle, from /proc/stat over `interval`
    seconds (None without /proc/stat)."""
    def sample() -> Tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
        return ticks[3] + ticks[4], sum(ticks)  # idle + iowait, all

    try:
        idle_before, total_before = sample()
        time.sleep(interval)
        idle_after, total_after = sample()
    except (OSError, ValueError, IndexError):
        return None
    return (idle_after - idle_before) / max(total_after - total_before, 1) * (os.cpu_count() or 1)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def share_idle_cores(runs_starting: int) -> Tuple[int, str]:
    """(intra-op threads each, why) for `runs_starting` processes a launcher starts now: the cores idle at
    this moment (busy with other work or with runs started earlier, they are not counted), shared out, at
    least one each; the rule of `choose_threads` for a run started alone."""
    cores, idle = usable_cores(), idle_cores()
    if idle is None:
        return threads_each(runs_starting), f"{cores} cores shared by {runs_starting} runs starting together"
    each = max(1, min(cores, int(idle / max(runs_starting, 1) + 0.5)))
    return each, (f"set by the sweep: {idle:.1f} of {cores} cores were idle when it started this run"
                  + (f", shared by the {runs_starting} runs it started then" if runs_starting > 1 else ""))


def threads_each(runs_at_once: int) -> int:
    """Intra-op threads for each of `runs_at_once` processes started together on this machine: its cores
    shared out (at least one each). Started at the same moment, every process would find all cores idle,
    take them all, and the threads would then wait for each other (see `choose_threads`)."""
    return max(1, usable_cores() // max(runs_at_once, 1))


def choose_threads(requested: Optional[int], recorded: Optional[int] = None) -> Tuple[int, str]:
    """(intra-op threads, why): for a resumed run the count it was trained with (`recorded`), unless
    --threads says otherwise; else --threads, else OMP_NUM_THREADS, else the cores that are idle now (at
    least one). bench/threads.py measured why: on idle cores every thread helps (width 8 to 64), while
    threads that must share a core with another busy process wait for each other and make a step many
    times slower than one thread does.

    The CPU's arithmetic depends on the count (oneDNN and the reductions split the work by thread, and
    floating-point sums in another order round differently), so a resume keeps it: that is what makes it
    bit-identical to the run that was not interrupted, whatever the machine's load or OMP_NUM_THREADS."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    env_threads = int(env) if env.isdigit() and int(env) > 0 else None
    if recorded:
        if requested and requested != recorded:
            return requested, (f"--threads; the run was trained with {recorded} until now, so its continuation "
                               "will not be bit-identical to an uninterrupted run")
        ignored = (f"; OMP_NUM_THREADS={env_threads} not used" if env_threads not in (None, recorded)
                   and not requested else "")
        return recorded, ("the run's own count, recorded when it started: a resume keeps it so that it continues "
                          f"bit-identically{ignored}; --threads N to change it")
    if requested:
        return requested, "--threads"
    if env_threads:
        return env_threads, os.environ.get(THREADS_REASON) or "OMP_NUM_THREADS"
    cores = usable_cores()
    idle = idle_cores()
    if idle is None:
        return cores, "every core"
    threads = max(1, min(cores, int(idle + 0.5)))
    return threads, f"the idle cores: {idle:.1f} of {cores} were idle at the start; --threads N to choose"


def set_threads(requested: Optional[int], recorded: Optional[int] = None) -> str:
    """Set torch's intra-op threads (see `choose_threads`); returns the line that says how many and why."""
    threads, why = choose_threads(requested, recorded)
    torch.set_num_threads(threads)
    return f"CPU threads: {threads} ({why})"


def autocast(amp: str, device: torch.device):
    """The forward-pass context for `--amp` (losses are computed in fp32 inside it)."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def grad_scaler(amp: str, device: torch.device) -> Optional[torch.amp.GradScaler]:
    """A gradient scaler for fp16 (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(device.type) if amp == "fp16" else None


def prepare_model(model: nn.Module, device: torch.device, world: World, channels_last: bool = False,
                  sync_bn: bool = False, find_unused: bool = False) -> nn.Module:
    """Move to `device`, then optionally SyncBatchNorm, channels_last and DDP (torchrun)."""
    if sync_bn and world.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if world.enabled:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=find_unused)
    return model
