"""The training-memory estimate that main.py prints, set beside the measured peak of real GLMC steps.

    python bench/memory_estimate.py                     # three CPU configurations
    python bench/memory_estimate.py --config resnet50:64:16 --config resnet32:32:64:16
    python bench/memory_estimate.py --config resnet32:32:64:64 --flags= --flags="--amp bf16 --channels_last" \
        --flags=--compile

Each configuration (arch:image size:batch[:width]) runs with each `--flags` setting (default: fp32
eager) in a fresh process: the training step of main.py (glmc/train_step.py: both mixes, backward,
SGD update) on random images, two steps first (the compiled setting compiles there), then two
measured steps. On the CPU the measured peak is the peak resident memory of the measured steps
(VmHWM, reset through /proc/self/clear_refs before them) minus the resident memory before the
network was built; the memory the process still holds after compiling is shown on its own. On a
GPU it is torch.cuda.max_memory_allocated over the measured steps minus the memory allocated
before the network was built. The estimate comes from utils/memory.py.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from glmc.losses import LossOptions  # noqa: E402
from glmc.train_step import GLMCStep, train_step  # noqa: E402
from models import build_model  # noqa: E402
from utils.config import Parser  # noqa: E402
from utils.memory import estimate_training_memory  # noqa: E402
from utils.speed import grad_scaler  # noqa: E402

DEFAULT_CONFIGS = ["resnet32:32:64:64", "resnet32:32:64:16", "resnet50:64:16"]
COUNTS = [int(5000 * 0.01 ** (c / 9)) for c in range(10)]  # CIFAR-10-LT, IF 100


def resident_bytes(field: str = "VmRSS") -> int:
    """A line of /proc/self/status in bytes: VmRSS (resident now) or VmHWM (the peak since the last reset)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    """Set the peak resident memory (VmHWM) to the resident memory now (Linux 4.0 and later)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def speed_flags(flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    parser.add_argument("--channels_last", action="store_true")
    parser.add_argument("--compile", nargs="?", const="default", default=None)
    return parser.parse_args(shlex.split(flags))


def measure(arch: str, size: int, batch: int, width: int, flags: str, device: torch.device) -> dict:
    """{'peak': bytes of the measured steps above the memory before the network was built, 'held': bytes
    held just before them (weights, optimizer state, inputs and, compiled, the compiler's own)}."""
    opts = speed_flags(flags)
    layout = torch.channels_last if opts.channels_last else torch.contiguous_format
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated(device)
    else:
        before = resident_bytes()
    model = build_model(arch, 10, width).to(device, memory_format=layout).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-3)
    step_loss = GLMCStep(COUNTS, 1.2, LossOptions(4.0), lambda epoch: 0.5, size, 0, None, device, opts.compile)
    step_loss.begin_epoch(0, 4)
    views = [torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=layout) for _ in range(4)]
    labels = [torch.randint(0, 10, (batch,), device=device) for _ in range(2)]
    data = ((views[0], views[1]), labels[0]), ((views[2], views[3]), labels[1])
    scaler = grad_scaler(opts.amp, device)

    def steps(first: int) -> None:
        for s in range(first, first + 2):
            loss, _ = train_step(model, optimizer, step_loss, data, s, opts.amp, opts.compile, device, scaler)
        float(loss)

    steps(0)  # the compiled setting compiles here
    if device.type == "cuda":
        torch.cuda.synchronize()
        held = torch.cuda.memory_allocated(device) - before
        torch.cuda.reset_peak_memory_stats(device)
        steps(2)
        return {"peak": torch.cuda.max_memory_allocated(device) - before, "held": held}
    held = resident_bytes() - before
    reset_peak()
    steps(2)
    return {"peak": resident_bytes("VmHWM") - before, "held": held}


def main() -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", help="arch:image size:batch[:width] (repeatable)")
    parser.add_argument("--flags", action="append",
                        help="main.py speed flags of one setting, written --flags='--amp bf16 --channels_last', "
                             "--flags=--compile, --flags= for fp32 eager (repeatable; default: fp32 eager)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one in this process
    opts = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if opts.one:
        arch, size, batch, width, flags = json.loads(opts.one)
        print(json.dumps(measure(arch, size, batch, width, flags, device)))
        return 0
    rows = ["| network | image | batch | flags | estimate (GB) | measured peak (GB) | estimate / measured | "
            "held before the steps (GB) |", "|---|---|---|---|---|---|---|---|"]
    for config in opts.config or DEFAULT_CONFIGS:
        parts = config.split(":")
        arch, size, batch = parts[0], int(parts[1]), int(parts[2])
        width = int(parts[3]) if len(parts) > 3 else 64
        for flags in opts.flags or [""]:
            estimate = estimate_training_memory(lambda: build_model(arch, 10, width), size, batch, glmc=True,
                                                amp=speed_flags(flags).amp).total
            out = subprocess.run([sys.executable, __file__, "--one", json.dumps([arch, size, batch, width, flags])],
                                 capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-2000:], file=sys.stderr)
                return 1
            measured = json.loads(out.stdout.strip().splitlines()[-1])
            name = arch + (f" width {width}" if arch == "resnet32" else "")
            rows.append(f"| {name} | {size} px | {batch} | {flags or 'fp32 eager'} | {estimate / 1e9:.3f} | "
                        f"{measured['peak'] / 1e9:.3f} | {estimate / measured['peak']:.2f} | "
                        f"{measured['held'] / 1e9:.3f} |")
            print(rows[-1], flush=True)
    print(f"\nGLMC steps on {device} ({torch.get_num_threads()} threads); measured: "
          + ("torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak resident memory (VmHWM)")
          + " of two steps after two first ones, above the memory held before the network was built\n"
          + "\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
