"""What only shows on GPUs: torchrun's device setup, CUDA generator states, the compiled step.

The CPU tests mock the CUDA calls; the CUDA tests run where a GPU is present and are
shown as skipped elsewhere.
"""
import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

import main as train_script
import utils.distributed as distributed
import utils.progress as progress
import utils.rng as rng
import utils.run_checkpoints as run_checkpoints
from tests.conftest import CUDA, ROOT, TINY_TRAIN, sigterm_when
from utils.errors import UsageError


def test_each_process_sets_its_gpu_before_the_process_group(monkeypatch):
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.append(("set_device", index)))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed, "group_store", lambda: "store")
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend, **kw: calls.append(("init_process_group", backend, kw.get("device_id"),
                                                            kw.get("store"))))
    world = distributed.init_world()
    assert (world.rank, world.size, world.local_rank) == (3, 4, 1)
    assert calls == [("set_device", 1), ("init_process_group", "nccl", torch.device("cuda", 1), "store")]


def test_more_processes_per_node_than_gpus_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    with pytest.raises(UsageError, match="--nproc_per_node"):
        distributed.init_world()


@pytest.mark.parametrize("saved,device,expected", [
    ([b"s0", b"s1", b"s2", b"s3", b"s4", b"s5", b"s6", b"s7"], torch.device("cuda", 0), b"s0"),
    ([b"s0", b"s1", b"s2"], torch.device("cuda", 2), b"s2"),
    ([b"s0", b"s1"], torch.device("cuda", 5), b"s0"),  # written on a machine with fewer GPUs
    (b"only", torch.device("cuda", 3), b"only"),  # the current format: the run's device only
])
def test_resume_restores_only_the_runs_cuda_generator(monkeypatch, saved, device, expected):
    restored = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, dev: restored.append((state, dev)))
    states = {"python": rng.random.getstate(), "numpy": rng.np.random.get_state(), "torch": torch.get_rng_state(),
              "cuda": saved}
    rng.restore_rng_states(states, device)
    assert restored == [(expected, device)]
    rng.restore_rng_states({**states, "cuda": saved}, torch.device("cpu"))
    assert len(restored) == 1  # a CPU run touches no CUDA generator


@pytest.mark.slow
def test_cpu_checkpoint_saves_no_cuda_state_and_resumes_with_extra_ones(tmp_path, data_root, monkeypatch):
    """A checkpoint carrying eight GPUs' generator states (an older run on a bigger machine) resumes."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU run, also where there is a GPU
    real_evaluate = train_script.evaluate

    def evaluate_then_signal(*a, **kw):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_evaluate(*a, **kw)

    monkeypatch.setattr(train_script, "evaluate", evaluate_then_signal)
    args = train_script.get_args_parser().parse_args(
        TINY_TRAIN + ["--root", data_root, "--epochs", "2", "--root_log", str(tmp_path / "runs")])
    with pytest.raises(train_script.RunStopped):
        train_script.main(args)
    monkeypatch.setattr(train_script, "evaluate", real_evaluate)
    (name,) = os.listdir(tmp_path / "runs")
    path = tmp_path / "runs" / name / "ckpt.pth.tar"
    checkpoint = torch.load(path, weights_only=False)
    assert checkpoint["rng"]["cuda"] is None and "mix" not in checkpoint["rng"]
    checkpoint["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 8
    del checkpoint["checksum"]  # edited on purpose
    torch.save(checkpoint, path)
    train_script.main(train_script.get_args_parser().parse_args(TINY_TRAIN + ["--root", data_root, "--resume",
                                                                             str(path.parent)]))
    records = [json.loads(line) for line in (path.parent / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]


@pytest.mark.slow
def test_stop_requests_are_exchanged_only_at_progress_lines_under_torchrun(tmp_path, data_root, monkeypatch):
    """Under torchrun (two processes, faked) the stop request is a collective at progress lines only."""
    exchanged = {"main": 0, "divergence": 0}

    def counting(where):
        def any_rank(world, flags, device):
            exchanged[where] += 1
            return list(flags)
        return any_rank

    monkeypatch.setattr(train_script, "any_rank", counting("main"))
    monkeypatch.setattr(run_checkpoints, "any_rank", counting("main"))  # the check before each checkpoint
    monkeypatch.setattr(progress, "any_rank", counting("divergence"))
    monkeypatch.setattr(train_script, "init_world", lambda: train_script.World(0, 2, 0))
    monkeypatch.setattr(train_script, "broadcast_object", lambda world, obj: obj)
    monkeypatch.setattr(train_script, "main_rank_first", lambda world, build, what: build())
    monkeypatch.setattr(train_script, "prepare_model", lambda model, device, world, *a, **kw: model.to(device))
    monkeypatch.setattr(train_script, "evaluate", lambda *a, **kw: {
        "top1": 50.0, "top5": 90.0, "many": None, "medium": None, "few": 50.0, "test_images": 30})
    args = train_script.get_args_parser().parse_args(
        TINY_TRAIN + ["--root", data_root, "--epochs", "1", "-p", "2", "--root_log", str(tmp_path / "runs")])
    train_script.main(args)
    images = sum(int(20 * 0.1 ** (c / 9)) for c in range(10))  # the tiny IF-10 training set
    steps = math.ceil(math.ceil(images / 2) / 8)  # each process: half the images, batches of 16 / 2
    progress_lines = sum(1 for s in range(1, steps + 1) if (s - 1) % 2 == 0 or s == steps)
    assert steps > progress_lines
    # stop requests: one per progress line, one before the checkpoint (non-finite weights), one after the
    # epoch; non-finite losses: one per progress line and one at the epoch's end
    assert exchanged == {"main": progress_lines + 2, "divergence": progress_lines + 1}


@pytest.mark.slow
@CUDA
def test_cuda_bf16_channels_last_compiled_run_stops_and_resumes(tmp_path, data_root):
    cmd = [sys.executable, "-u", os.path.join(ROOT, "main.py"), *TINY_TRAIN, "--root", data_root, "--epochs", "2",
           "--amp", "bf16", "--channels_last", "--compile", "--root_log", str(tmp_path / "runs")]
    code, err = sigterm_when(cmd, "epoch 1/2 test", cwd=ROOT)
    assert code == 128 + signal.SIGTERM, err
    (name,) = os.listdir(tmp_path / "runs")
    run_dir = tmp_path / "runs" / name
    checkpoint = torch.load(run_dir / "ckpt.pth.tar", weights_only=False)
    assert checkpoint["epoch"] == 1 and isinstance(checkpoint["rng"]["cuda"], torch.Tensor)
    resumed = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), "--root", data_root, "--resume",
                              str(run_dir)],
                             capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(math.isfinite(r["loss"]) and r["gpu_peak_mb"] > 0 for r in records)
