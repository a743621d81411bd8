"""One-shot GPU check: CUDA tests, training-step throughput per setting, the README CIFAR-10 run, fp32 vs bf16.

    python bench/gpu_check.py --archive .device_data/cifar10-jpeg.tar.gz --out "$OUT" --minutes 8
    python bench/gpu_check.py --smoke          # the same code on the CPU on tiny data, in about 5 minutes

Run in the repository root of a machine with torch, torchvision and tensorboard (pytest for
part a). The CIFAR-10 archive is a .tar.gz of JPEGs laid out train/<class>/*.jpg and
test/<class>/*.jpg; it is converted to the python-pickle layout that main.py reads.
Within the time budget (--minutes) it does, and writes to --out as gpu_check.md and
gpu_check.json (the table is also printed last):
  (a) the CUDA tests (`pytest -k cuda`), alone on the machine;
  (b) images per second of the full training step (tensor data path, both forward
      passes, backward, SGD update; whole epochs of CIFAR-10-LT IF 100 shapes timed
      after a warm-up epoch) at widths 64 and 16 for fp32 eager, bf16 + channels_last,
      and bf16 + channels_last + torch.compile (default, reduce-overhead), with the GPU
      peak memory. Each setting runs in its own process; they compile side by side and
      are timed one at a time, with nothing else running;
  (c) with the fastest width-64 setting, the README CIFAR-10 command on the real data
      (200 epochs; stopped at the budget if they do not fit), top-1 per epoch and wall time;
  (d) if time remains, 5 epochs in fp32 eager and in the fastest bf16 setting, same seed;
  (e) the README command with the fastest setting, 1, 2 and 4 runs at once on the GPU for
      --table_seconds each: aggregate training images/s and the projected time of
      `scripts/reproduce.py cifar10-lt --seeds 3` (6 runs of 200 epochs per seed) at that many at once.
"""
import argparse
import fcntl
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Dict, List, Optional

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from utils.config import Parser  # noqa: E402
from utils.progress import plural  # noqa: E402
from utils.speed import threads_each  # noqa: E402

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
README_CIFAR10 = ["--dataset", "cifar10", "-a", "resnet32", "--num_classes", "10", "--imbanlance_rate", "0.01",
                  "--beta", "0.5", "--lr", "0.01", "--epochs", "200", "-b", "64", "--momentum", "0.9",
                  "--weight_decay", "5e-3", "--resample_weighting", "0.0", "--label_weighting", "1.2",
                  "--contrast_weight", "4"]
RELEASED_TOP1 = {"updated": 88.49, "original": 87.75}  # GLMC, CIFAR-10-LT IF 100, as published
CIFAR10_LT_IMAGES = {100: 12406, 50: 13996, 10: 20431}  # training images of CIFAR-10-LT per imbalance factor
SETTINGS = {  # name: (--amp, --channels_last, --compile mode)
    "fp32 eager": ("off", False, None),
    "bf16 + channels_last": ("bf16", True, None),
    "bf16 + channels_last + compile": ("bf16", True, "default"),
    "bf16 + channels_last + compile reduce-overhead": ("bf16", True, "reduce-overhead"),
}


def setting_flags(name: str) -> List[str]:
    amp, channels_last, mode = SETTINGS[name]
    return ["--amp", amp] + ["--channels_last"] * channels_last + (["--compile", mode] if mode else [])


# --- data -------------------------------------------------------------------------------------

def jpeg_archive_to_batches(archive: str, root: str) -> str:
    """Write `root`/cifar-10-batches-py (data_batch_1..5, test_batch, batches.meta) from a JPEG archive.

    Images are ordered by class, then file name; the five training files hold 10,000 images each.
    """
    from PIL import Image

    splits: Dict[str, List] = {"train": [], "test": []}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or not member.name.endswith(".jpg") or len(parts) < 3:
                continue
            split, cls, name = parts[-3:]
            if split in splits and cls in CLASSES:
                image = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
                splits[split].append((CLASSES.index(cls), name, np.asarray(image, dtype=np.uint8)))
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)

    def dump(name: str, items: List) -> None:
        data = np.stack([img.transpose(2, 0, 1).reshape(-1) for _, _, img in items]) if items else \
            np.zeros((0, 3072), np.uint8)
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({"data": data, "labels": [c for c, _, _ in items], "filenames": [n for _, n, _ in items]}, f)

    train, test = sorted(splits["train"], key=lambda t: t[:2]), sorted(splits["test"], key=lambda t: t[:2])
    if not train or not test:
        raise SystemExit(f"error: {archive} holds no train/<class>/*.jpg or test/<class>/*.jpg images")
    per_file = -(-len(train) // 5)
    for i in range(5):
        dump(f"data_batch_{i + 1}", train[i * per_file:(i + 1) * per_file])
    dump("test_batch", test)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": CLASSES}, f)
    return folder


def write_tiny_archive(path: str, train_per_class: int = 100, test_per_class: int = 5) -> None:
    """A small JPEG archive in the real one's layout (for --smoke)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for split, n in (("train", train_per_class), ("test", test_per_class)):
            for cls in CLASSES:
                for i in range(n):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
                    info = tarfile.TarInfo(f"{split}/{cls}/{i:04d}.jpg")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)


# --- (b) one throughput measure, in its own process ------------------------------------------------

def measure(spec: Dict) -> Dict:
    """Images per second of whole training epochs of one setting, timed after one warm-up epoch.

    Signals readiness (a file) after the warm-up, then waits for the shared lock, so that the
    timed epochs run alone on the device."""
    from datasets.cifar_lt import img_num_per_class
    from datasets.tensor_path import TensorTrainLoader
    from datasets.transforms import CIFAR_STATS
    from models import build_model
    from utils.distributed import World
    from glmc.losses import LossOptions, cumulative_alpha
    from utils.speed import prepare_model
    from glmc.train_step import GLMCStep, train_step

    amp, channels_last, mode = SETTINGS[spec["setting"]]
    device = torch.device(spec["device"])
    counts = img_num_per_class(spec["n_max"], 10, 0.01)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), counts)
    loader = TensorTrainLoader(rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8), labels, counts,
                               spec["batch"], 0.0, 3407, device, *CIFAR_STATS["cifar10"])
    model = prepare_model(build_model("resnet32", 10, spec["width"]), device, World(), channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-3)
    step_loss = GLMCStep(counts, 1.2, LossOptions(4.0), lambda epoch: cumulative_alpha(epoch, 200), 32, 3407, None,
                         device, mode)

    def epoch(e: int) -> float:
        sync(device)
        start = time.perf_counter()
        step_loss.begin_epoch(e, len(loader))
        for s, batch in enumerate(loader.epoch(e)):
            train_step(model, optimizer, step_loss, batch, s, amp, mode, device)
        sync(device)
        return time.perf_counter() - start

    warmup_s = epoch(0)
    open(spec["ready"], "w").close()
    with open(spec["lock"]) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        times = []
        while len(times) < 5 and (sum(times) < spec["min_timed_s"] or len(times) < 1):
            times.append(epoch(1 + len(times)))
    images = len(labels) * len(times)
    result = {"setting": spec["setting"], "width": spec["width"], "images_per_s": images / sum(times),
              "ms_per_step": 1000 * sum(times) / (len(times) * len(loader)), "epoch_s": sum(times) / len(times),
              "timed_epochs": len(times), "warmup_epoch_s": warmup_s}
    if device.type == "cuda":
        result["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return result


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- the check -------------------------------------------------------------------------------------

class Check:
    def __init__(self, opts) -> None:
        self.opts = opts
        self.start = time.time()
        self.deadline = self.start + opts.minutes * 60 - 10  # 10 s kept for the table
        self.work = tempfile.mkdtemp(prefix="gpu_check_")
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.results: Dict = {"command": " ".join(sys.argv), "smoke": opts.smoke, "batch": 16 if opts.smoke else 64}
        os.makedirs(opts.out, exist_ok=True)

    def left(self) -> float:
        return self.deadline - time.time()

    def say(self, message: str) -> None:
        print(f"[{time.time() - self.start:6.1f} s] {message}", flush=True)

    def environment(self) -> None:
        env = {"torch": torch.__version__, "device": self.device, "python": sys.version.split()[0]}
        if self.device == "cuda":
            props = torch.cuda.get_device_properties(0)
            env.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2 ** 30, 1),
                       cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
        self.results["environment"] = env
        self.say(f"environment: {env}")

    def data(self) -> str:
        root = os.path.join(self.work, "data")
        archive = self.opts.archive
        if self.opts.smoke:
            archive = os.path.join(self.work, "tiny-cifar10-jpeg.tar.gz")
            write_tiny_archive(archive)
        elif not os.path.isfile(archive):
            raise SystemExit(f"error: --archive {archive!r} not found: copy the CIFAR-10 JPEG archive there "
                             "(a .tar.gz of train/<class>/*.jpg and test/<class>/*.jpg)")
        start = time.time()
        jpeg_archive_to_batches(archive, root)
        self.results["data"] = {"archive": archive, "convert_s": round(time.time() - start, 1)}
        self.say(f"data: {archive} converted in {time.time() - start:.1f} s")
        return root

    def throughput(self) -> None:
        """(b): the settings warm up (and compile) side by side; the timed epochs run one at a time
        once every setting is warm."""
        lock_path = os.path.join(self.work, "timing.lock")
        open(lock_path, "w").close()
        holder = open(lock_path)
        fcntl.flock(holder, fcntl.LOCK_EX)
        widths = [8] if self.opts.smoke else [64, 16]
        workers = []
        for width in widths:
            for name in SETTINGS:
                tag = f"{width}-{len(workers)}"
                spec = {"setting": name, "width": width, "device": self.device, "batch": self.results["batch"],
                        "n_max": 100 if self.opts.smoke else 5000, "min_timed_s": 0.2 if self.opts.smoke else 2.0,
                        "lock": lock_path, "ready": os.path.join(self.work, f"ready-{tag}"),
                        "log": os.path.join(self.work, f"measure-{tag}.log")}
                with open(spec["log"], "w") as log:
                    proc = subprocess.Popen([sys.executable, __file__, "--one", json.dumps(spec)], cwd=REPO,
                                            stdout=log, stderr=subprocess.STDOUT)
                workers.append((spec, proc))
        warm_deadline = time.time() + max(min(self.left() * 0.4, 240), 30)
        while time.time() < warm_deadline and any(p.poll() is None and not os.path.exists(s["ready"])
                                                  for s, p in workers):
            time.sleep(0.5)
        fcntl.flock(holder, fcntl.LOCK_UN)  # the settings now take turns on the device
        rows, logs = [], []
        for spec, proc in workers:
            ready = os.path.exists(spec["ready"])
            try:
                proc.wait(timeout=max(self.left() * 0.25, 20))
                stopped = None
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                stopped = "out of time while " + ("timing" if ready else "warming up (compiling)")
            out = open(spec["log"]).read()
            logs.append(f"=== {spec['setting']}, width {spec['width']} (exit {proc.returncode})\n{out}")
            lines = out.strip().splitlines()
            last = lines[-1] if lines else ""
            error = stopped or next((line for line in reversed(lines) if "Error" in line), last)[-200:] or "no output"
            row = json.loads(last) if proc.returncode == 0 and last.startswith("{") else \
                {"setting": spec["setting"], "width": spec["width"], "error": error}
            rows.append(row)
            self.say(f"(b) width {row['width']} {row['setting']}: "
                     + (f"{row['images_per_s']:.0f} img/s" if "images_per_s" in row else f"failed: {row['error']}"))
        with open(os.path.join(self.opts.out, "throughput.log"), "w") as f:
            f.write("\n".join(logs))
        self.results["throughput"] = rows

    def tests(self) -> None:
        tests_log = os.path.join(self.opts.out, "tests.log")
        with open(tests_log, "w") as log:
            tests = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-rs", "-k", "cuda", "-p",
                                      "no:cacheprovider", "tests"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            try:
                tests.wait(timeout=min(self.left() * 0.6, 300))
            except subprocess.TimeoutExpired:
                tests.kill()
                tests.wait()
        tail = open(tests_log).read().strip().splitlines()[-1:] or ["(no output)"]
        self.results["tests"] = {"exit_code": tests.returncode, "summary": tail[0]}
        self.say(f"(a) CUDA tests: {tail[0]} (exit {tests.returncode})")

    def fastest(self, width: int) -> Optional[Dict]:
        """The setting for (c) and (d): --setting if given, else the fastest measured at `width`."""
        rows = [r for r in self.results.get("throughput", []) if r["width"] == width and "images_per_s" in r
                and self.opts.setting in (None, r["setting"])]
        if not rows and self.opts.setting:
            return {"setting": self.opts.setting}
        return max(rows, key=lambda r: r["images_per_s"]) if rows else None

    def train(self, label: str, data_root: str, flags: List[str], seconds: float) -> Dict:
        """main.py with `flags` for at most `seconds` (then SIGTERM: it stops cleanly); its epochs' records."""
        return self.train_together([(label, flags)], data_root, seconds)[0]

    def train_together(self, runs: List, data_root: str, seconds: float) -> List[Dict]:
        """Several main.py processes at once, (label, flags) each, for at most `seconds`; their records."""
        root_log = os.path.join(self.work, "runs")
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(threads_each(len(runs))))  # as scripts/reproduce.py shares them
        started, start = [], time.time()
        for label, flags in runs:
            cmd = [sys.executable, "-u", "main.py", *flags, "--root", data_root, "--no_download", "-j", "0",
                   "--root_log", root_log, "--name", label, "-p", "100000"]
            log_path = os.path.join(self.opts.out, f"{label}.log")
            with open(log_path, "w") as log:
                started.append((label, cmd, log_path, subprocess.Popen(cmd, cwd=REPO, stdout=log, env=env,
                                                                       stderr=subprocess.STDOUT)))
        for *_, proc in started:
            try:
                proc.wait(timeout=max(seconds - (time.time() - start), 1))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)
        for *_, proc in started:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        wall = time.time() - start
        return [self.records_of(os.path.join(root_log, label), cmd, log_path, proc.returncode, wall)
                for label, cmd, log_path, proc in started]

    @staticmethod
    def records_of(run_dir: str, cmd: List[str], log_path: str, exit_code: int, wall: float) -> Dict:
        metrics = os.path.join(run_dir, "metrics.jsonl")
        records = [json.loads(line) for line in open(metrics)] if os.path.exists(metrics) else []
        result = {"command": "python " + " ".join(cmd[2:]), "exit_code": exit_code, "wall_s": round(wall, 1),
                  "epochs_done": len(records), "top1": [r["top1"] for r in records],
                  "train_loss": [round(r["loss"], 4) for r in records],
                  "epoch_s": [round(r["seconds"], 2) for r in records],
                  "images_per_s": [r.get("images_per_s") for r in records],
                  "eval_s": [r.get("eval_seconds") for r in records],
                  "gpu_peak_mb": max((r.get("gpu_peak_mb", 0) for r in records), default=None)}
        if records:
            last = records[-1]
            result.update(best_top1=round(max(result["top1"]), 2), last_top1=round(last["top1"], 2),
                          **{g: None if last[g] is None else round(last[g], 2) for g in ("many", "medium", "few")})
        else:
            result["log_tail"] = open(log_path).read()[-600:]
        return result

    def table_throughput(self, data_root: str) -> None:
        """(e) The README CIFAR-10 command with the fastest setting, 1, 2 and 4 runs at once on one GPU for
        a fixed time each: aggregate training images/s, and the projected time of the cifar10-lt table."""
        best = self.fastest(8 if self.opts.smoke else 64)
        name = best["setting"] if best else "fp32 eager"
        flags = README_CIFAR10 + setting_flags(name) + (["--width", "8", "-b", "16"] if self.opts.smoke else [])
        each = self.opts.table_seconds
        out = {"setting": name, "seconds_each": each, "runs": {}}
        for k in (1, 2, 4):
            if self.left() < each + 30:
                out["runs"][k] = {"skipped": "out of time"}
                continue
            self.say(f"(e) {plural(k, 'README run')} at once with '{name}' for {each:.0f} s")
            results = self.train_together([(f"table-{k}-{i}", flags + ["--seed", str(i + 1)]) for i in range(k)],
                                          data_root, each)
            # training throughput of each run's epochs after its first (compilation, warm-up), summed; a run
            # with one epoch only counts with that one (marked)
            kept = [r["images_per_s"][1:] or r["images_per_s"] for r in results]
            rates = [sum(v) / len(v) for v in kept if v]
            evals = [e for r in results for e in (r["eval_s"][1:] or r["eval_s"]) if e is not None]
            row = {"runs_with_figures": len(rates), "epochs_done": [r["epochs_done"] for r in results],
                   "first_epoch_only": any(r["epochs_done"] == 1 for r in results)}
            if len(rates) == k:
                row["aggregate_images_per_s"] = round(sum(rates), 1)
                row["eval_s_per_epoch"] = round(sum(evals) / len(evals), 2) if evals else None
                # cifar10-lt, 3 seeds: glmc and updated runs of 200 epochs at IF 100, 50, 10, k at a time
                images = 3 * 2 * 200 * sum(CIFAR10_LT_IMAGES.values())
                overhead = 3 * 2 * 3 * 200 * (row["eval_s_per_epoch"] or 0) / k
                row["projected_table_h"] = round((images / sum(rates) + overhead) / 3600, 2)
            out["runs"][k] = row
            self.say(f"(e) {k} at once: {row}")
        self.results["table_throughput"] = out

    def readme_run(self, data_root: str) -> None:
        best = self.fastest(8 if self.opts.smoke else 64)
        name = best["setting"] if best else "fp32 eager"
        flags = README_CIFAR10 + setting_flags(name) + (["--width", "8", "-b", "16"] if self.opts.smoke else [])
        self.say(f"(c) README CIFAR-10 command with '{name}' for up to {self.left():.0f} s")
        # all 200 epochs when the measured rate says they fit beside (d); else all the time left
        needed = 60 + (best["warmup_epoch_s"] + 200 * best["epoch_s"] * 1.2 if best and "epoch_s" in best
                       else float("inf"))
        reserve = 75 if needed < self.left() - 75 else 5
        result = self.train("readme-cifar10", data_root, flags, self.left() - reserve)
        result["setting"] = name
        if best and "epoch_s" in best:
            result["projected_200_epochs_min"] = round(200 * best["epoch_s"] / 60, 1)
        self.results["readme_run"] = result
        self.say(f"(c) {result['epochs_done']}/200 epochs in {result['wall_s']} s, "
                 f"best top-1 {result.get('best_top1')}")

    def fp32_vs_bf16(self, data_root: str) -> None:
        best = self.fastest(8 if self.opts.smoke else 64)
        bf16 = best["setting"] if best and best["setting"] != "fp32 eager" else "bf16 + channels_last"
        epochs = "1" if self.opts.smoke else "5"
        base = [f if f != "200" else epochs for f in README_CIFAR10] + (
            ["--width", "8", "-b", "16"] if self.opts.smoke else [])
        out = {}
        for name in ("fp32 eager", bf16):
            if self.left() < 30:
                out[name] = {"skipped": "out of time"}
                continue
            label = "fp32" if name == "fp32 eager" else "bf16"
            share = 0.45 if name == "fp32 eager" else 1.0
            out[name] = self.train(f"{label}-{epochs}-epochs", data_root, base + setting_flags(name),
                                   (self.left() - 5) * share)
            self.say(f"(d) {name}: top-1 per epoch {out[name]['top1']}")
        self.results["fp32_vs_bf16"] = out

    def write(self) -> str:
        self.results["total_s"] = round(time.time() - self.start, 1)
        text = table(self.results)
        with open(os.path.join(self.opts.out, "gpu_check.json"), "w") as f:
            json.dump(self.results, f, indent=2)
        with open(os.path.join(self.opts.out, "gpu_check.md"), "w") as f:
            f.write(text + "\n")
        return text


def table(results: Dict) -> str:
    env = results.get("environment", {})
    lines = [f"# GPU check ({'smoke, ' if results['smoke'] else ''}{env.get('gpu', env.get('device'))}, "
             f"torch {env.get('torch')}, CUDA {env.get('cuda')}, {results.get('total_s')} s in all)", ""]
    tests = results.get("tests")
    if tests:
        lines += [f"(a) CUDA tests: {tests['summary']} (exit {tests['exit_code']})", ""]
    rows = results.get("throughput", [])
    if rows:
        lines += [f"(b) full training step, tensor data path, batch {results.get('batch')}, CIFAR-10-LT IF 100 "
                  "class counts" + (" (tiny)" if results["smoke"] else ""), "",
                  "| width | setting | images/s | ms/step | x fp32 eager | warm-up epoch s | GPU peak MB |",
                  "|---|---|---|---|---|---|---|"]
        for r in rows:
            if "images_per_s" not in r:
                lines.append(f"| {r['width']} | {r['setting']} | failed: {r['error'][:80]} | | | | |")
                continue
            base = next((b for b in rows if b["width"] == r["width"] and b["setting"] == "fp32 eager"
                         and "images_per_s" in b), None)
            speedup = f"{r['images_per_s'] / base['images_per_s']:.2f}" if base else ""
            peak = f"{r['gpu_peak_mb']:.0f}" if "gpu_peak_mb" in r else ""
            lines.append(f"| {r['width']} | {r['setting']} | {r['images_per_s']:.0f} | {r['ms_per_step']:.2f} | "
                         f"{speedup} | {r['warmup_epoch_s']:.1f} | {peak} |")
        lines.append("")
    run = results.get("readme_run")
    if run:
        lines += [f"(c) README CIFAR-10 command, {run['setting']}: {run['epochs_done']}/200 epochs in "
                  f"{run['wall_s']} s wall (exit {run['exit_code']}); best top-1 {run.get('best_top1')}, last "
                  f"{run.get('last_top1')} (many {run.get('many')}, medium {run.get('medium')}, few "
                  f"{run.get('few')}); released: {RELEASED_TOP1['updated']} updated, {RELEASED_TOP1['original']} "
                  f"original; measured step rate projects 200 epochs to {run.get('projected_200_epochs_min')} min "
                  "of training (evaluation excluded)",
                  "top-1 per epoch: " + " ".join(f"{t:.2f}" for t in run["top1"]), ""]
    tab = results.get("table_throughput")
    if tab:
        lines += [f"(e) README CIFAR-10 command, {tab['setting']}, several at once on one "
                  f"{'CPU' if results['environment'].get('device') == 'cpu' else 'GPU'} for "
                  f"{tab['seconds_each']:.0f} s each: training throughput after each run's first epoch, and the "
                  "projected time of `scripts/reproduce.py cifar10-lt --seeds 3` (18 runs of 200 epochs, "
                  "evaluation included, MaxNorm stages not)", "",
                  "| runs at once | aggregate images/s | evaluation s per epoch | projected table hours |",
                  "|---|---|---|---|"]
        for k, row in tab["runs"].items():
            if "aggregate_images_per_s" not in row:
                lines.append(f"| {k} | {row.get('skipped') or 'no full epoch after the first: ' + str(row)} | | |")
                continue
            lines.append(f"| {k} | {row['aggregate_images_per_s']:.0f}"
                         + (" (first epoch only)" if row["first_epoch_only"] else "")
                         + f" | {row['eval_s_per_epoch']} | {row['projected_table_h']} |")
        lines.append("")
    cmp_ = results.get("fp32_vs_bf16")
    if cmp_:
        lines.append("(d) same seed and data, README command for 5 epochs: top-1 | training loss, per epoch")
        for name, r in cmp_.items():
            if "top1" not in r or not r["top1"]:
                lines.append(f"  {name}: {r.get('skipped') or 'failed: ' + r.get('log_tail', '')[-200:]}")
                continue
            lines.append(f"  {name}: " + " ".join(f"{t:.2f}" for t in r["top1"]) + " | "
                         + " ".join(f"{v:.4f}" for v in r["train_loss"]) + f" ({r['wall_s']} s)")
    return "\n".join(lines)


def main() -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", default=".device_data/cifar10-jpeg.tar.gz",
                        help="CIFAR-10 as a .tar.gz of train/<class>/*.jpg and test/<class>/*.jpg")
    parser.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu_check",
                        help="folder for gpu_check.md, gpu_check.json and the logs (default: $OUT or runs/gpu_check)")
    parser.add_argument("--minutes", type=float, default=None, help="time budget (default 8; 5 with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="tiny data, width 8: checks this script on any machine")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out, of a,b,c,d,e")
    parser.add_argument("--table_seconds", type=float, default=None,
                        help="(e): seconds per number of runs at once (default 40; 30 with --smoke)")
    parser.add_argument("--setting", default=None, choices=list(SETTINGS),
                        help="setting for (c) and (d) (default: the fastest at width 64 in (b))")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one throughput setting
    opts = parser.parse_args()
    if opts.one:
        print(json.dumps(measure(json.loads(opts.one))), flush=True)
        return 0
    opts.minutes = opts.minutes or (5.0 if opts.smoke else 8.0)
    opts.table_seconds = opts.table_seconds or (30.0 if opts.smoke else 40.0)
    check = Check(opts)
    skip = set(opts.skip.split(","))
    try:
        check.environment()
        data_root = check.data()
        if "a" not in skip:
            check.tests()
        if "b" not in skip:
            check.throughput()
        if "e" not in skip:
            check.table_throughput(data_root)
        if "c" not in skip:
            check.readme_run(data_root)
        if "d" not in skip and check.left() > 60:
            check.fp32_vs_bf16(data_root)
    finally:
        text = check.write()
        print("\n" + text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
