"""main.py and test.py on tiny synthetic CIFAR-10, width 16, on each device present."""
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, write_cifar

pytestmark = pytest.mark.slow  # trains networks or starts processes

TRAIN = [sys.executable, os.path.join(ROOT, "main.py")]
TEST = [sys.executable, os.path.join(ROOT, "test.py")]
COMMON = ["--dataset", "cifar10", "-a", "resnet32", "--width", "16", "--num_classes", "10",
          "--imbanlance_rate", "0.1", "-j", "0", "--no_download"]


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, **kw)


def test_train_two_epochs_then_evaluate(tmp_path, device):
    root = str(tmp_path / "data")
    write_cifar(root, train_per_class=20, test_per_class=4)
    logs = tmp_path / "runs"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else None  # CPU even beside a GPU
    out = run(TRAIN + COMMON + ["--root", root, "--epochs", "2", "-b", "16", "--lr", "0.01",
                                "--root_log", str(logs), "-p", "2"], env=env)
    assert out.returncode == 0, out.stderr
    assert f"device: {device}" in out.stdout
    (run_dir,) = list(logs.iterdir())
    assert " " not in run_dir.name and ":" not in run_dir.name and "IF10" in run_dir.name
    names = set(os.listdir(run_dir))
    assert {"ckpt.pth.tar", "ckpt.best.pth.tar", "args.json", "metrics.jsonl", "log.txt"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    # Counts 20 down to 2: every class is few-shot (<= 20), the other groups are empty.
    assert all(0 <= r["top1"] <= 100 and r["many"] is None and r["few"] is not None for r in records)
    cfg = json.loads((run_dir / "args.json").read_text())
    assert cfg["train_counts"] == [int(20 * 0.1 ** (c / 9)) for c in range(10)]
    ckpt = torch.load(run_dir / "ckpt.pth.tar", weights_only=False)
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    assert cfg["parameters"] == sum(v.numel() for k, v in ckpt["state_dict"].items() if not k.endswith(buffers))
    assert ckpt["epoch"] == 2 and ckpt["best_acc1"] == max(r["top1"] for r in records)
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt["state_dict"])
    assert {"optimizer", "scheduler", "rng"} <= set(ckpt)

    json_path = tmp_path / "eval.json"
    out = run(TEST + COMMON + ["--root", root, "--resume", str(run_dir / "ckpt.pth.tar"), "--json", str(json_path)],
              env=env)
    assert out.returncode == 0, out.stderr
    report = json.loads(json_path.read_text())
    assert report["top1"] == records[-1]["top1"]
    assert {"top1", "top5", "many", "medium", "few", "per_class", "shot_rule"} <= set(report)
    assert len(report["per_class"]) == 10 and report["shot_rule"] == "released"

    # A released-style checkpoint: DataParallel keys, only epoch/state_dict/best_acc1.
    released = {"epoch": 2, "best_acc1": 0.0,
                "state_dict": {"module." + k: v for k, v in ckpt["state_dict"].items()}}
    torch.save(released, tmp_path / "released.pth.tar")
    out = run(TEST + COMMON + ["--root", root, "--resume", str(tmp_path / "released.pth.tar"),
                               "--json", str(tmp_path / "released.json")], env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "released.json").read_text())["per_class"] == report["per_class"]


def test_dry_run_prints_counts_and_writes_nothing(tmp_path):
    root = str(tmp_path / "data")
    write_cifar(root, train_per_class=20, test_per_class=2)
    out = run(TRAIN + COMMON + ["--root", root, "--dry_run", "--root_log", str(tmp_path / "runs")])
    assert out.returncode == 0, out.stderr
    counts = [int(20 * 0.1 ** (c / 9)) for c in range(10)]
    assert str(counts) in out.stdout and "parameters: 489,636" in out.stdout
    assert "Nothing was written" in out.stdout and str(tmp_path / "runs") in out.stdout
    assert not (tmp_path / "runs").exists()


def test_bad_input_gives_one_line_and_exit_2(tmp_path):
    out = run(TRAIN + COMMON + ["--root", str(tmp_path / "nowhere"), "--dry_run", "--root_log", str(tmp_path)])
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "cifar-10-batches-py" in out.stderr and "nowhere" in out.stderr
