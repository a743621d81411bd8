"""Exact resume, interruption, divergence and bad input (exit code 2, a message naming the value)."""
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import main as train_script
import test as test_script
import glmc.train_step as train_step_module
from tests.conftest import ROOT, TINY_DATA, TINY_TRAIN, sigterm_when, stop_after_epoch_one, write_cifar
from utils.config import run_cli

pytestmark = pytest.mark.slow  # trains networks or starts processes

DATA, TINY = TINY_DATA, TINY_TRAIN


def args_for(*extra):
    return train_script.get_args_parser().parse_args(TINY + list(extra))


def final_weights(run_dir):
    return torch.load(os.path.join(run_dir, "ckpt.pth.tar"), weights_only=False)["state_dict"]


def max_abs_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def only_run(folder):
    (name,) = os.listdir(folder)
    return os.path.join(folder, name)


def test_resume_after_epoch_one_is_bit_identical(tmp_path, data_root, monkeypatch):
    train_script.main(args_for("--root", data_root, "--epochs", "3", "--root_log", str(tmp_path / "a")))
    reference = final_weights(only_run(tmp_path / "a"))
    stopped = stop_after_epoch_one(monkeypatch, ["--root", data_root, "--epochs", "3", "--root_log",
                                                 str(tmp_path / "b")])
    assert stopped.exit_code == 128 + signal.SIGTERM and "epoch boundary" in str(stopped)
    run_dir = only_run(tmp_path / "b")
    assert torch.load(os.path.join(run_dir, "ckpt.pth.tar"), weights_only=False)["epoch"] == 1

    train_script.main(args_for("--root", data_root, "--epochs", "3", "--resume", run_dir))
    assert max_abs_diff(final_weights(run_dir), reference) == 0.0
    lines = open(os.path.join(run_dir, "metrics.jsonl")).read().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_a_resume_keeps_the_thread_count_and_kernels_the_run_was_trained_with(tmp_path, data_root, monkeypatch,
                                                                               capsys):
    """Stopped with one thread and resumed where OMP_NUM_THREADS says 2 (as a sweep's share on another
    machine would): the run's own count and memory layout are used, and the result is that of the
    uninterrupted run. Forced to 2 with --threads, or to other kernels with --no-channels_last, it says
    the continuation is no longer bit-identical (and it is not: 1 and 2 threads round differently)."""
    common = ["--root", data_root, "--epochs", "3", "--channels_last"]
    try:
        train_script.main(args_for(*common, "--threads", "1", "--root_log", str(tmp_path / "a")))
        reference = final_weights(only_run(tmp_path / "a"))
        stop_after_epoch_one(monkeypatch, [*common, "--threads", "1", "--root_log", str(tmp_path / "b")])
        run_dir = only_run(tmp_path / "b")
        forced = {flags: str(tmp_path / name) for flags, name in ((("--threads", "2"), "forced_threads"),
                                                                  (("--no-channels_last",), "forced_layout"))}
        for copy in forced.values():
            shutil.copytree(run_dir, copy)
        capsys.readouterr()
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        train_script.main(args_for("--root", data_root, "--resume", run_dir))  # no flag but the folder
        out = capsys.readouterr().out
        assert "CPU threads: 1 (the run's own count, recorded when it started" in out
        assert "OMP_NUM_THREADS=2 not used" in out and "bit-identical to an uninterrupted run" not in out
        assert max_abs_diff(final_weights(run_dir), reference) == 0.0

        for flags, copy in forced.items():
            train_script.main(args_for(*common, *flags, "--resume", copy))
            out = capsys.readouterr().out
            assert "will not be bit-identical to an uninterrupted run" in out, flags
            assert max_abs_diff(final_weights(copy), reference) > 0.0, flags
            if "--threads" in flags:
                assert "CPU threads: 2 (--threads; the run was trained with 1 until now" in out
            else:
                assert "note: --no-channels_last where the run was trained with --channels_last" in out
    finally:
        torch.set_num_threads(1)


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path, data_root, monkeypatch):
    calls = {"n": 0}
    real_loss = train_step_module.glmc_loss

    def loss_turning_nan(*a, **kw):
        calls["n"] += 1
        loss, terms = real_loss(*a, **kw)
        if calls["n"] == 8:  # epoch 2 (5 steps per epoch), step 3
            return loss * float("nan"), {**terms, "loss": terms["loss"] * float("nan")}
        return loss, terms

    monkeypatch.setattr(train_step_module, "glmc_loss", loss_turning_nan)
    with pytest.raises(train_script.RunStopped) as stopped:
        train_script.main(args_for("--root", data_root, "--epochs", "3", "--root_log", str(tmp_path / "runs")))
    message = str(stopped.value)
    assert stopped.value.exit_code == 3 and "epoch 2, step 3" in message and "balance" in message
    assert torch.load(os.path.join(only_run(tmp_path / "runs"), "ckpt.pth.tar"), weights_only=False)["epoch"] == 1


@pytest.mark.parametrize("data_path", [["--data_path", "tensor"], ["--data_path", "pil", "-j", "2"]],
                         ids=["tensor", "pil-2-workers"])
def test_sigterm_mid_epoch_in_a_subprocess_then_resume(tmp_path, data_root, data_path):
    cmd = [sys.executable, "-u", os.path.join(ROOT, "main.py"), *TINY, "--root", data_root, "--epochs", "2",
           *data_path]
    # Uninterrupted reference run.
    ref = subprocess.run(cmd + ["--root_log", str(tmp_path / "a")], capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    code, err = sigterm_when(cmd + ["--root_log", str(tmp_path / "b")], "epoch 1/2 step 2/")
    assert code == 128 + signal.SIGTERM, err
    assert "resumes mid-epoch" in err and "--resume" in err and "Traceback" not in err
    run_dir = only_run(tmp_path / "b")
    resumed = subprocess.run(cmd + ["--resume", run_dir], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "continuing at epoch 1, step" in resumed.stdout and "(no epoch finished yet)" in resumed.stdout
    assert max_abs_diff(final_weights(run_dir), final_weights(only_run(tmp_path / "a"))) == 0.0


def run_and_fail(script, argv, capsys):
    with pytest.raises(SystemExit) as exited:
        run_cli(script.main, script.get_args_parser(), argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert "Traceback" not in err
    return err


def corrupt(kind, root):
    folder = os.path.join(root, "cifar-10-batches-py")
    if kind == "missing":
        os.remove(os.path.join(folder, "data_batch_3"))
        return "data_batch_3"
    path = os.path.join(folder, "test_batch")
    if kind == "truncated":
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
    else:
        with open(path, "wb") as f:
            pickle.dump(["not", "cifar"], f)
    return "test_batch"


@pytest.mark.parametrize("kind", ["missing", "truncated", "foreign"])
def test_broken_cifar_files(kind, data_root, tmp_path, capsys):
    name = corrupt(kind, data_root)
    err = run_and_fail(train_script, TINY + ["--root", data_root, "--root_log", str(tmp_path / "runs"), "--dry_run"],
                       capsys)
    assert name in err
    assert not os.path.exists(tmp_path / "runs")


@pytest.mark.parametrize("extra,needle", [
    (["--num_classes", "100"], "--num_classes 100"),
    (["--imbanlance_rate", "0"], "--imbanlance_rate 0.0"),
    (["--imbanlance_rate", "1.5"], "--imbanlance_rate 1.5"),
    (["-b", "0"], "--batch_size 0"),
    (["--epochs", "0"], "--epochs 0"),
    (["--lr", "-0.1"], "--lr -0.1"),
    (["--resample_weighting", "-1"], "--resample_weighting -1.0"),
    (["--label_weighting", "-0.5"], "--label_weighting -0.5"),
    (["--gpu", "3"], "--gpu 3"),
    (["-a", "resnet18", "--width", "16"], "--width 16"),
])
def test_bad_values(extra, needle, data_root, tmp_path, capsys):
    err = run_and_fail(train_script, TINY + ["--root", data_root, "--root_log", str(tmp_path / "r")] + extra, capsys)
    assert needle in err


@pytest.mark.parametrize("extra,needle", [(["-a", "vgg16"], "vgg16"), (["--dataset", "mnist"], "mnist")])
def test_unknown_choices(extra, needle, data_root, capsys):
    assert needle in run_and_fail(train_script, TINY + ["--root", data_root] + extra, capsys)


@pytest.mark.parametrize("where", ["missing", "empty"])
def test_missing_or_empty_root(where, tmp_path, capsys):
    root = tmp_path / "cifar"
    if where == "empty":
        root.mkdir()
    err = run_and_fail(train_script, TINY + ["--root", str(root), "--dry_run"], capsys)
    assert str(root) in err and "data_batch_1" in err


def test_unwritable_run_folder(data_root, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    err = run_and_fail(train_script, TINY + ["--root", data_root, "--root_log", str(blocker / "runs"), "--dry_run"],
                       capsys)
    assert str(blocker) in err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    root = str(tmp / "data")
    write_cifar(root, train_per_class=20, test_per_class=3)
    train_script.main(args_for("--root", root, "--epochs", "1", "--root_log", str(tmp / "runs")))
    return root, only_run(tmp / "runs")


@pytest.mark.parametrize("script,flags", [(train_script, TINY), (test_script, DATA)], ids=["main", "test"])
@pytest.mark.parametrize("kind", ["missing", "truncated", "foreign", "other_arch", "undescribed_other_arch"])
def test_bad_checkpoints(script, flags, kind, trained_run, tmp_path, capsys):
    data_root, run_dir = trained_run
    good = os.path.join(run_dir, "ckpt.pth.tar")
    path = str(tmp_path / "bad.pth.tar")
    if kind == "truncated":
        data = open(good, "rb").read()
        open(path, "wb").write(data[: len(data) // 3])
    elif kind == "foreign":
        torch.save([1, 2, 3], path)
    elif kind == "other_arch":
        path = good
    elif kind == "undescribed_other_arch":  # no run description (as released): the flags are trusted
        kept = {k: v for k, v in torch.load(good, weights_only=False).items() if k not in ("run", "args", "checksum")}
        torch.save(kept, path)
    before = {n: os.path.getmtime(os.path.join(run_dir, n)) for n in os.listdir(run_dir)}
    argv = flags + ["--root", data_root, "--resume", path]
    if kind.endswith("other_arch"):
        argv = [a if a != "8" else "16" for a in argv]  # a width-16 model cannot take width-8 weights
    err = run_and_fail(script, argv, capsys)
    assert path in err
    if kind == "other_arch":  # the checkpoint says what it is: the contradiction is named before any loading
        assert "--width 16 (the checkpoint has 8)" in err
    if kind == "undescribed_other_arch":
        assert "conv1.weight" in err and "shape" in err
    after = {n: os.path.getmtime(os.path.join(run_dir, n)) for n in os.listdir(run_dir)}
    assert after == before  # nothing written to the existing run folder


def test_ctrl_c_at_start_up_exits_130_with_one_line(tmp_path, data_root):
    cmd = [sys.executable, "-u", os.path.join(ROOT, "main.py"), *TINY, "--root", data_root, "--epochs", "3",
           "--root_log", str(tmp_path / "runs")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    time.sleep(0.3)  # while the libraries load
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err == "interrupted (Ctrl-C)\n"
    # and once the run folder is open, before training: one line, the folder's lock released
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    for line in proc.stdout:
        if line.startswith("run folder:"):
            proc.send_signal(signal.SIGINT)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    (run_dir,) = os.listdir(tmp_path / "runs")
    assert not [n for n in os.listdir(tmp_path / "runs" / run_dir) if n.endswith(".lock") or n == ".lock"]
