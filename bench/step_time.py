"""Seconds per GLMC training step (forward of both mixes, backward, SGD update) on random data.

    python bench/step_time.py --width 64 --width 16 -b 64 --steps 5
    python bench/step_time.py -a resnext50_32x4d --num_classes 1000 --image_size 224 -b 8 --steps 3

Data loading is excluded: this measures the model and the loss only.
"""
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.config import Parser  # noqa: E402
from models import build_model  # noqa: E402
from glmc.losses import LossOptions, glmc_loss  # noqa: E402
from utils.class_weights import class_balance_weights  # noqa: E402
from glmc.mixing import device_mix, draw_mix, weight_pair  # noqa: E402


def time_steps(arch: str, width: int, num_classes: int, size: int, batch: int, steps: int, warmup: int,
               device: torch.device) -> float:
    torch.manual_seed(0)
    model = build_model(arch, num_classes, width).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-3)
    weights = class_balance_weights([int(5000 * 0.01 ** (c / max(num_classes - 1, 1))) for c in range(num_classes)],
                                    1.2).to(device)
    rng = np.random.default_rng(0)
    alpha = weight_pair(0.5, device)
    views = [torch.randn(batch, 3, size, size, device=device) for _ in range(4)]
    y, y_b = (torch.randint(0, num_classes, (batch,), device=device) for _ in range(2))
    elapsed = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        mix = device_mix(draw_mix(rng, size, size), size, size, device)
        loss, _ = glmc_loss(model, views[0], views[1], y, views[2], views[3], y_b, mix, weights, alpha,
                            LossOptions(4.0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            elapsed.append(time.perf_counter() - start)
    return float(np.median(elapsed))


def main() -> None:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("-a", "--arch", default="resnet32")
    parser.add_argument("--width", type=int, action="append",
                        help="resnet32 widths (repeatable; default 64 and 16; ignored for other networks)")
    parser.add_argument("--num_classes", type=int, default=10)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("-b", "--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = []
    widths = (args.width or [64, 16]) if args.arch == "resnet32" else [64]
    for width in widths:
        seconds = time_steps(args.arch, width, args.num_classes, args.image_size, args.batch_size, args.steps,
                             args.warmup, device)
        name = f"{args.arch}" + (f" width {width}" if args.arch == "resnet32" else "")
        results.append({"arch": args.arch, "width": width if args.arch == "resnet32" else None,
                        "image_size": args.image_size, "batch": args.batch_size, "device": str(device),
                        "threads": torch.get_num_threads(), "seconds_per_step": round(seconds, 4)})
        print(f"{name}, {args.image_size}px, batch {args.batch_size}, {device}: {seconds:.3f} s per step "
              f"(median of {args.steps})")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
