"""Seconds per CPU training step by intra-op thread count, on an idle CPU and with busy cores.

    python bench/threads.py                         # widths 8, 16, 64; threads 1 and all; idle and 2 busy
    python bench/threads.py --width 16 --busy 0 --busy 2 --threads 1 --threads 2

Each measurement is a fresh `bench/step_time.py` process with OMP_NUM_THREADS set (and, with
--wait_policy, OMP_WAIT_POLICY), so nothing carries over between them. "Busy" starts N processes
that spin on a core each (`yes > /dev/null`) for the measurement and stops them after. A
measurement that takes longer than --timeout is reported as such.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def step_seconds(width: int, batch: int, threads: int, wait_policy: Optional[str], timeout: float) -> Optional[float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("OMP_WAIT_POLICY", None)
    if wait_policy:
        env["OMP_WAIT_POLICY"] = wait_policy
    try:
        out = subprocess.run([sys.executable, os.path.join(REPO, "bench", "step_time.py"), "--width", str(width),
                              "-b", str(batch), "--steps", "3", "--warmup", "1"], env=env, capture_output=True,
                             text=True, timeout=timeout, check=True).stdout
    except subprocess.TimeoutExpired:
        return None
    return json.loads(out.strip().splitlines()[-1])[0]["seconds_per_step"]


def spinners(n: int) -> List[subprocess.Popen]:
    return [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--width", type=int, action="append", help="resnet32 widths (default 8, 16, 64)")
    parser.add_argument("-b", "--batch_size", type=int, default=64)
    parser.add_argument("--threads", type=int, action="append", help="thread counts (default 1 and all cores)")
    parser.add_argument("--busy", type=int, action="append", help="busy cores during the measurement (default 0, 2)")
    parser.add_argument("--wait_policy", action="append", choices=["unset", "ACTIVE", "PASSIVE"],
                        help="OMP_WAIT_POLICY values to try (default: unset only)")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds allowed per measurement")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    rows: List[Dict] = []
    for busy in args.busy or [0, 2]:
        load = spinners(busy)
        try:
            time.sleep(1.0 if busy else 0.0)
            for width in args.width or [8, 16, 64]:
                for threads in args.threads or sorted({1, cores}):
                    for policy in [None if p == "unset" else p for p in args.wait_policy or ["unset"]]:
                        seconds = step_seconds(width, args.batch_size, threads, policy, args.timeout)
                        row = {"busy_cores": busy, "width": width, "batch": args.batch_size, "threads": threads,
                               "wait_policy": policy or "unset", "seconds_per_step": seconds}
                        rows.append(row)
                        shown = f"{seconds:.3f} s" if seconds is not None else f"> {args.timeout:.0f} s (stopped)"
                        print(f"busy {busy}, width {width}, batch {args.batch_size}, {threads} thread(s), "
                              f"OMP_WAIT_POLICY {policy or 'unset'}: {shown} per step", flush=True)
        finally:
            for p in load:
                p.kill()
                p.wait()
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
