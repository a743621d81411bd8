"""Milliseconds per epoch that a run spends outside its training steps (evaluation, checkpoint, best copy, metrics).

    python bench/epoch_overhead.py --root data --width 64 --width 16
    python bench/epoch_overhead.py --code /path/to/another/checkout --root data     # the same for other code

Runs `main.py`'s `main()` of the checkout `--code` (default: this one) in a fresh process on
real CIFAR-10-LT, with the training steps replaced by a pause of --train_seconds (so that a
checkpoint written in the background has the time a real epoch gives it). Everything else is
the run's own code: the test-set evaluation, the checkpoint and its copies, the metrics line,
the log. The figure is the time between the end of one epoch's training and the start of the
next (the last epoch: the end of the run), averaged over the epochs after the first.
"""
import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time
sys.path.insert(0, CODE)
import main
marks = []

def paused_epoch(model, optimizer, train_loader, step_loss, epoch, args, log, progress, *rest, **kw):
    marks.append(["start", time.time()])
    time.sleep(PAUSE)
    progress.step = len(train_loader)
    marks.append(["end", time.time()])
    return {"loss": 0.0, "alpha": 1.0, "seconds": PAUSE, "images_per_s": 0.0}

main.train_one_epoch = paused_epoch
main.main(main.get_args_parser().parse_args(ARGV))
marks.append(["start", time.time()])
print("MARKS " + json.dumps(marks))
"""


def measure(code: str, argv, pause: float) -> float:
    script = CHILD.replace("CODE", repr(code)).replace("PAUSE", repr(pause)).replace("ARGV", repr(argv))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=code, check=True)
    marks = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("MARKS "))[6:])
    ends = [t for kind, t in marks if kind == "end"]
    starts = [t for kind, t in marks if kind == "start"][1:]  # the next epoch's start, or the run's end
    gaps = [s - e for e, s in zip(ends, starts)][1:]  # the first epoch warms up
    return 1000 * sum(gaps) / len(gaps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--code", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        help="the checkout whose main.py runs (default: this one)")
    parser.add_argument("--root", default="data", help="CIFAR-10 root")
    parser.add_argument("--width", type=int, action="append", help="ResNet-32 widths (default 64 and 16)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train_seconds", type=float, default=3.0, help="the pause standing for training (3)")
    parser.add_argument("--out", default="/tmp/epoch_overhead", help="parent of the runs' folders")
    opts = parser.parse_args()
    rows = []
    for width in opts.width or [64, 16]:
        argv = ["--dataset", "cifar10", "--root", os.path.abspath(opts.root), "--width", str(width), "--epochs",
                str(opts.epochs), "--no_download", "--no_tensorboard", "--root_log",
                os.path.join(opts.out, f"w{width}")]
        ms = measure(os.path.abspath(opts.code), argv, opts.train_seconds)
        rows.append(f"| {width} | {ms:,.0f} |")
        print(rows[-1], flush=True)
    print(f"\n{opts.code}: ms per epoch outside the training steps (mean of epochs 2-{opts.epochs})\n"
          "| width | ms |\n|---|---|\n" + "\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
