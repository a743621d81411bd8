"""Seconds per GLMC training step (forward of both mixes, backward, SGD update) on random data.

    python bench/step_time.py --width 64 --width 16 -b 64 --steps 5

Data loading is excluded: this measures the model and the loss only.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models import build_model  # noqa: E402
from utils.losses import LossOptions, class_balance_weights, glmc_loss  # noqa: E402
from utils.mixing import draw_mix  # noqa: E402


def time_steps(width: int, batch: int, steps: int, warmup: int, device: torch.device) -> float:
    torch.manual_seed(0)
    model = build_model("resnet32", 10, width).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-3)
    weights = class_balance_weights([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50], 1.2).to(device)
    rng = np.random.default_rng(0)
    views = [torch.randn(batch, 3, 32, 32, device=device) for _ in range(4)]
    y, y_b = (torch.randint(0, 10, (batch,), device=device) for _ in range(2))
    elapsed = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss, _ = glmc_loss(model, views[0], views[1], y, views[2], views[3], y_b, draw_mix(rng, 32, 32),
                            weights, 0.5, LossOptions(4.0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            elapsed.append(time.perf_counter() - start)
    return float(np.median(elapsed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, action="append", help="resnet32 widths (repeatable; default 64 and 16)")
    parser.add_argument("-b", "--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = []
    for width in args.width or [64, 16]:
        seconds = time_steps(width, args.batch_size, args.steps, args.warmup, device)
        results.append({"width": width, "batch": args.batch_size, "device": str(device),
                        "threads": torch.get_num_threads(), "seconds_per_step": round(seconds, 4)})
        print(f"resnet32 width {width}, batch {args.batch_size}, {device}: {seconds:.3f} s per step (median of {args.steps})")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
