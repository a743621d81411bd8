"""Training throughput of the CIFAR data paths and of full GLMC steps, with peak memory.

    python bench/throughput.py                       # CPU here, or the GPU when there is one
    python bench/throughput.py --widths 64 --amp bf16 --channels_last --compile --json out.json

Measures, each configuration in its own process (so peak memory is its own):
- the data path alone: training samples per second of the PIL path (per-image
  transforms in DataLoader workers, two views of the sample and of its partner, as
  released) and of the tensor path (batched crops and flips on the device);
- full training steps (data + both forwards + backward + SGD update) for each
  width and data path;
- peak host RSS of the main process and of its largest child process (a loader
  worker; its RSS counts the pages it shares with the main process) and, on a GPU,
  peak allocated GPU memory;
- the projected time of a 200-epoch CIFAR-10-LT IF 100 run (194 steps of batch 64
  per epoch, plus one evaluation of 10,000 test images per epoch).
Data: random uint8 images with the CIFAR-10-LT IF 100 class counts (no download).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Dict, List

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.config import Parser  # noqa: E402
from datasets import DataBundle, build_loaders  # noqa: E402
from datasets.cifar_lt import img_num_per_class  # noqa: E402
from datasets.loaders import ImageArrayDataset  # noqa: E402
from datasets.transforms import TwoViews, cifar_test_transform, cifar_train_transform  # noqa: E402
from models import build_model  # noqa: E402
from utils.distributed import World  # noqa: E402
from glmc.losses import LossOptions  # noqa: E402
from utils.metrics import evaluate  # noqa: E402
from utils.speed import autocast, prepare_model  # noqa: E402
from glmc.train_step import GLMCStep  # noqa: E402

EPOCHS, BATCH, TEST_IMAGES = 200, 64, 10000


def synthetic_cifar10_lt(seed: int = 0) -> DataBundle:
    counts = img_num_per_class(5000, 10, 0.01)
    rng = np.random.RandomState(seed)
    labels = np.repeat(np.arange(10), counts)
    train = ImageArrayDataset(rng.randint(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8), labels,
                              TwoViews(cifar_train_transform("cifar10")))
    test_labels = np.repeat(np.arange(10), TEST_IMAGES // 10)
    test = ImageArrayDataset(rng.randint(0, 256, (len(test_labels), 32, 32, 3), dtype=np.uint8), test_labels,
                             cifar_test_transform("cifar10"))
    return DataBundle(train, test, counts, 10, 32)


def run_args(opts, data_path: str, width: int) -> SimpleNamespace:
    return SimpleNamespace(data_path=data_path, dataset="cifar10", method="glmc", batch_size=BATCH,
                           resample_weighting=0.0, workers=opts.workers, seed=3407, width=width, amp=opts.amp,
                           contrast_weight=4.0, label_weighting=1.2, local_label="lambda", mix_reduction="sum",
                           no_global_mix=False, no_local_mix=False, no_consistency=False, no_reweight=False,
                           balanced_softmax=False, lambda_dist="uniform", beta=0.5, fixed_alpha=None, epochs=EPOCHS)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_one(kind: str, data_path: str, width: int, opts) -> Dict:
    """One configuration, in this process."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = synthetic_cifar10_lt()
    args = run_args(opts, data_path, width)
    train_loader, test_loader = build_loaders(data, args, device)
    batches = iter(train_loader.epoch(0))
    result = {"kind": kind, "data_path": data_path, "device": str(device)}
    if kind == "data":
        next(batches)  # start-up (worker processes) excluded
        sync(device)
        start, n = time.perf_counter(), 0
        for _ in range(opts.data_steps):
            batch = next(batches)
            n += len(batch[0][1])
        sync(device)
        result["samples_per_s"] = n / (time.perf_counter() - start)
    else:
        model = prepare_model(build_model("resnet32", 10, width), device, world=World(),
                              channels_last=opts.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-3)
        step_loss = GLMCStep(data.train_counts, 1.2, LossOptions(4.0), lambda epoch: 0.5, 32, 0, None, device,
                             "default" if opts.compile else None)
        step_loss.begin_epoch(0, len(train_loader))
        model.train()
        timings = []
        for i in range(opts.warmup + opts.steps):
            sync(device)
            start = time.perf_counter()
            batch = next(batches)
            with autocast(opts.amp, device):
                loss, _ = step_loss(model, batch, i)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync(device)
            if i >= opts.warmup:
                timings.append(time.perf_counter() - start)
        step_s = float(np.median(timings))
        start = time.perf_counter()
        evaluate(model, test_loader, device, data.train_counts)
        eval_s = time.perf_counter() - start
        steps_per_epoch = len(train_loader)
        result.update(width=width, amp=opts.amp, channels_last=opts.channels_last, compile=opts.compile,
                      seconds_per_step=step_s, samples_per_s=BATCH / step_s, eval_seconds=eval_s,
                      projected_200_epochs_min=EPOCHS * (steps_per_epoch * step_s + eval_s) / 60)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["largest_worker_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if device.type == "cuda":
        result["gpu_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return result


def table(rows: List[Dict]) -> str:
    lines = ["| measure | data path | width | samples/s | s/step | 200-epoch projection "
             "| peak RSS MB (largest child) | GPU MB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        projection = f"{r['projected_200_epochs_min']:.0f} min" if "projected_200_epochs_min" in r else ""
        step = f"{r['seconds_per_step']:.3f}" if "seconds_per_step" in r else ""
        gpu = f"{r['gpu_max_allocated_mb']:.0f}" if "gpu_max_allocated_mb" in r else ""
        label = "data path only" if r["kind"] == "data" else "full step" + (f" {r['amp']}" if r["amp"] != "off" else "")
        lines.append(f"| {label} | {r['data_path']} | {r.get('width', '')} | {r['samples_per_s']:.0f} | {step} | "
                     f"{projection} | {r['peak_rss_mb']:.0f} ({r['largest_worker_rss_mb']:.0f}) | {gpu} |")
    return "\n".join(lines)


def main() -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="16,64", help="resnet32 widths for the full-step measures")
    parser.add_argument("--data_paths", default="pil,tensor")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="PIL path loader workers (released: 4)")
    parser.add_argument("--data_steps", type=int, default=60, help="batches timed for the data-path measure")
    parser.add_argument("--steps", type=int, default=8, help="training steps timed (median)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    parser.add_argument("--channels_last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one configuration
    opts = parser.parse_args()
    if opts.one:
        kind, data_path, width = opts.one.split(":")
        print(json.dumps(measure_one(kind, data_path, int(width), opts)))
        return 0
    configs = [("data", p, 0) for p in opts.data_paths.split(",")]
    configs += [("step", p, int(w)) for w in opts.widths.split(",") for p in opts.data_paths.split(",")]
    rows = []
    passthrough = ["--workers", str(opts.workers), "--data_steps", str(opts.data_steps), "--steps", str(opts.steps),
                   "--warmup", str(opts.warmup), "--amp", opts.amp]
    passthrough += ["--channels_last"] * opts.channels_last + ["--compile"] * opts.compile
    for kind, path, width in configs:
        out = subprocess.run([sys.executable, __file__, *passthrough, "--one", f"{kind}:{path}:{width}"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"measured {kind} {path} {width or ''}: {rows[-1]['samples_per_s']:.0f} samples/s", flush=True)
    print(table(rows))
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
