"""bench/gpu_check.py on the CPU: the archive conversion, and a short smoke run of parts c and d."""
import io
import json
import os
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
from PIL import Image

from datasets.cifar_lt import read_cifar_split, read_class_names
from tests.conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))
import gpu_check  # noqa: E402


def test_jpeg_archive_becomes_the_pickle_release(tmp_path):
    archive = str(tmp_path / "tiny.tar.gz")
    gpu_check.write_tiny_archive(archive, train_per_class=6, test_per_class=2)
    folder = gpu_check.jpeg_archive_to_batches(archive, str(tmp_path / "data"))
    train, test = read_cifar_split(folder, "cifar10", "train"), read_cifar_split(folder, "cifar10", "test")
    assert train.images.shape == (60, 32, 32, 3) and test.images.shape == (20, 32, 32, 3)
    assert np.bincount(train.labels).tolist() == [6] * 10 and np.bincount(test.labels).tolist() == [2] * 10
    assert read_class_names(folder, "cifar10")[:2] == ["airplane", "automobile"]
    with tarfile.open(archive) as tar:  # image i of class c is file c/000i.jpg, decoded as it is
        decoded = np.asarray(Image.open(io.BytesIO(tar.extractfile("train/bird/0003.jpg").read())).convert("RGB"))
    assert np.array_equal(train.images[2 * 6 + 3], decoded) and train.labels[2 * 6 + 3] == 2


def smoke(out_dir, *flags):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_check.py"), "--smoke", "--out",
                          str(out_dir), *flags], capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    table = (out_dir / "gpu_check.md").read_text()
    assert table.strip() in out.stdout  # printed last
    return json.loads((out_dir / "gpu_check.json").read_text()), table


def two_epoch_seconds(tmp_path):
    """Wall time of the smoke's README run for 2 epochs on this machine, start-up included."""
    tmp_path.mkdir()
    archive = str(tmp_path / "tiny.tar.gz")
    gpu_check.write_tiny_archive(archive)
    root = str(tmp_path / "data")
    gpu_check.jpeg_archive_to_batches(archive, root)
    flags = [f if f != "200" else "2" for f in gpu_check.README_CIFAR10] + ["--width", "8", "-b", "16"]
    start = time.time()
    subprocess.run([sys.executable, "main.py", *flags, "--root", root, "--no_download", "-j", "0", "--root_log",
                    str(tmp_path / "runs"), "--no_tensorboard"], cwd=ROOT, check=True, capture_output=True,
                   timeout=600)
    return time.time() - start


@pytest.mark.slow
def test_smoke_readme_run_stops_at_the_budget(tmp_path):
    # The budget follows this machine's measured speed: room for about four 2-epoch runs besides the
    # check's fixed costs, far from the 200 epochs, so that the verdict does not depend on the machine.
    budget_s = 60 + 4 * two_epoch_seconds(tmp_path / "measure")
    results, table = smoke(tmp_path / "check", "--skip", "a,b,d,e", "--minutes", f"{budget_s / 60:.3f}")
    run = results["readme_run"]
    assert run["exit_code"] == 143 and 1 <= run["epochs_done"] < 200  # SIGTERM at the budget, a clean stop
    assert len(run["top1"]) == run["epochs_done"] and run["setting"] == "fp32 eager"
    assert "--epochs 200" in run["command"] and "--contrast_weight 4" in run["command"]
    assert f"{run['epochs_done']}/200 epochs" in table and "fp32_vs_bf16" not in results


@pytest.mark.slow
def test_smoke_fp32_against_bf16(tmp_path):
    # two one-epoch runs, each given about a 2-epoch run's time of this machine, and the fixed costs
    budget_s = 90 + 3 * two_epoch_seconds(tmp_path / "measure")
    results, table = smoke(tmp_path / "check", "--skip", "a,b,c,e", "--minutes", f"{budget_s / 60:.3f}")
    runs = results["fp32_vs_bf16"]
    assert set(runs) == {"fp32 eager", "bf16 + channels_last"}
    assert all(r["epochs_done"] == 1 and r["exit_code"] == 0 for r in runs.values())
    assert "--amp bf16 --channels_last" in runs["bf16 + channels_last"]["command"]
    assert "--amp off" in runs["fp32 eager"]["command"]


@pytest.mark.slow
def test_smoke_table_part_runs_one_two_and_four_at_once(tmp_path):
    each = 15 + 3 * two_epoch_seconds(tmp_path / "measure")  # room for an epoch or more, from this machine's pace
    results, table = smoke(tmp_path / "check", "--skip", "a,b,c,d", "--table_seconds", f"{each:.0f}",
                           "--minutes", f"{(3 * (each + 30) + 60) / 60:.3f}")
    part = results["table_throughput"]
    assert sorted(part["runs"]) == ["1", "2", "4"]
    assert [len(part["runs"][k]["epochs_done"]) for k in ("1", "2", "4")] == [1, 2, 4]
    one = part["runs"]["1"]
    assert one["aggregate_images_per_s"] > 0 and one["projected_table_h"] > 0
    assert "| runs at once | aggregate images/s |" in table and "\n| 1 | " in table
