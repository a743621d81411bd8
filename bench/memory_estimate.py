"""The training-memory estimate that main.py prints, set beside the measured peak of real GLMC steps.

    python bench/memory_estimate.py                     # three CPU configurations
    python bench/memory_estimate.py --config resnet50:64:16 --config resnet32:32:64:16

Each configuration (arch:image size:batch[:width]) is measured in a fresh process: the process's
resident memory before the network is built, then the peak resident memory (getrusage) over two
GLMC steps (forward of both mixes, backward, SGD update) on random images, minus the first. On a GPU
it reads torch.cuda.max_memory_allocated instead. The estimate comes from utils/memory.py.
"""
import argparse
import json
import os
import resource
import subprocess
import sys

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from utils.config import Parser  # noqa: E402
from models import build_model  # noqa: E402
from glmc.losses import LossOptions, glmc_loss  # noqa: E402
from utils.class_weights import class_balance_weights  # noqa: E402
from utils.memory import estimate_training_memory  # noqa: E402
from glmc.mixing import device_mix, draw_mix, weight_pair  # noqa: E402

DEFAULT_CONFIGS = ["resnet32:32:64:64", "resnet32:32:64:16", "resnet50:64:16"]


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(arch: str, size: int, batch: int, width: int, device: torch.device) -> int:
    """Peak bytes of two GLMC steps above what the process held before the network was built."""
    warm = build_model("resnet32", 10, 8).to(device)  # load the kernels' libraries first, on a tiny network
    glmc_loss(warm, *(torch.randn(2, 3, 32, 32, device=device) for _ in range(2)), torch.tensor([0, 1], device=device),
              *(torch.randn(2, 3, 32, 32, device=device) for _ in range(2)), torch.tensor([1, 0], device=device),
              device_mix(draw_mix(np.random.default_rng(0), 32, 32), 32, 32, device),
              torch.ones(10, device=device), weight_pair(0.5, device))[0].backward()
    del warm
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = resident_bytes()
    model = build_model(arch, 10, width).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-3)
    weights = class_balance_weights([int(5000 * 0.01 ** (c / 9)) for c in range(10)], 1.2).to(device)
    views = [torch.randn(batch, 3, size, size, device=device) for _ in range(4)]
    y, y_b = (torch.randint(0, 10, (batch,), device=device) for _ in range(2))
    rng = np.random.default_rng(0)
    for _ in range(2):
        loss, _ = glmc_loss(model, views[0], views[1], y, views[2], views[3], y_b,
                            device_mix(draw_mix(rng, size, size), size, size, device), weights,
                            weight_pair(0.5, device), LossOptions(4.0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) - before
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before


def main() -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", help="arch:image size:batch[:width] (repeatable)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one in this process
    opts = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if opts.one:
        arch, size, batch, width = json.loads(opts.one)
        print(json.dumps(measure(arch, size, batch, width, device)))
        return 0
    rows = ["| network | image | batch | estimate (GB) | measured peak (GB) | estimate / measured |",
            "|---|---|---|---|---|---|"]
    for config in opts.config or DEFAULT_CONFIGS:
        parts = config.split(":")
        arch, size, batch = parts[0], int(parts[1]), int(parts[2])
        width = int(parts[3]) if len(parts) > 3 else 64
        estimate = estimate_training_memory(lambda: build_model(arch, 10, width), size, batch, glmc=True).total
        out = subprocess.run([sys.executable, __file__, "--one", json.dumps([arch, size, batch, width])],
                             capture_output=True, text=True, check=True)
        measured = int(out.stdout.strip().splitlines()[-1])
        name = arch + (f" width {width}" if arch == "resnet32" else "")
        rows.append(f"| {name} | {size} px | {batch} | {estimate / 1e9:.3f} | {measured / 1e9:.3f} | "
                    f"{estimate / measured:.2f} |")
        print(rows[-1], flush=True)
    print(f"\nGLMC steps on {device} ({torch.get_num_threads()} threads); measured: "
          + ("torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak resident memory (getrusage)")
          + " above the memory held before the network was built\n" + "\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
