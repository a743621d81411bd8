"""Run folders, self-describing checkpoints and resume: every figure a run writes belongs to that run."""
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch

import main as train_script
import test as test_script
from scripts import maxnorm_stage
from tests.conftest import ROOT, TINY_TRAIN, cli, sigterm_when, write_cifar
from utils import checkpoint as checkpoint_module
from utils.checkpoint import unwrap
from utils.run_names import new_run_folder

pytestmark = pytest.mark.slow  # trains networks or starts processes

TINY = TINY_TRAIN


def parse(*argv):
    return train_script.get_args_parser().parse_args(TINY + list(argv))


def only_run(folder):
    (name,) = os.listdir(folder)
    return os.path.join(folder, name)


def epochs_in_metrics(run_dir):
    return [json.loads(line)["epoch"] for line in open(os.path.join(run_dir, "metrics.jsonl")).read().splitlines()]


def ckpt_epoch(path):
    return torch.load(path, weights_only=False)["epoch"]


def stopped_after_epoch_one(data_root, root_log, monkeypatch, epochs=3, *extra):
    """A run of `epochs` epochs stopped by SIGTERM after its first epoch; returns its folder."""
    real_evaluate = train_script.evaluate

    def evaluate_then_signal(*a, **kw):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_evaluate(*a, **kw)

    with monkeypatch.context() as patch:
        patch.setattr(train_script, "evaluate", evaluate_then_signal)
        with pytest.raises(train_script.RunStopped):
            train_script.main(parse("--root", data_root, "--epochs", str(epochs), "--root_log", str(root_log),
                                    *extra))
    return only_run(root_log)


def snapshot(folder):
    return {name: os.path.getmtime(os.path.join(folder, name)) for name in os.listdir(folder)}


# ---------------------------------------------------------------- where a resumed run writes

@pytest.mark.parametrize("how", ["copied", "moved"])
def test_resume_writes_into_the_folder_being_resumed(how, tmp_path, data_root, monkeypatch):
    original = stopped_after_epoch_one(data_root, tmp_path / "runs", monkeypatch)
    before = snapshot(original)
    other = str(tmp_path / "elsewhere" / "my_run")
    os.makedirs(os.path.dirname(other))
    (shutil.copytree if how == "copied" else shutil.move)(original, other)
    train_script.main(parse("--root", data_root, "--resume", other))
    assert epochs_in_metrics(other) == [1, 2, 3] and ckpt_epoch(os.path.join(other, "ckpt.pth.tar")) == 3
    if how == "copied":
        assert snapshot(original) == before and epochs_in_metrics(original) == [1]
    else:
        assert not os.path.exists(original)  # not re-created


def test_resume_from_another_working_directory(tmp_path, data_root, monkeypatch):
    start_dir, other_dir = tmp_path / "a", tmp_path / "b"
    start_dir.mkdir()
    other_dir.mkdir()
    monkeypatch.chdir(start_dir)
    run_dir = stopped_after_epoch_one(data_root, "runs", monkeypatch)  # a relative --root_log
    monkeypatch.chdir(other_dir)
    train_script.main(parse("--root", data_root, "--resume", str(start_dir / run_dir)))
    assert os.listdir(other_dir) == []
    assert epochs_in_metrics(start_dir / run_dir) == [1, 2, 3]


# ---------------------------------------------------------------- what a resumed run computes

@pytest.mark.parametrize("flag", [["--epochs", "5"], ["--lr", "0.1"], ["--imbanlance_rate", "0.5"],
                                  ["--split", "cao"], ["-b", "8"], ["--contrast_weight", "1"]])
def test_a_changed_defining_flag_stops_the_resume(flag, tmp_path, data_root, monkeypatch, capsys):
    run_dir = stopped_after_epoch_one(data_root, tmp_path / "runs", monkeypatch)
    before = snapshot(run_dir)
    argv = TINY + ["--root", data_root, "--resume", run_dir] + flag  # the later value of a flag wins
    code, _, err = cli(train_script, argv, capsys)
    assert code == 2 and "Traceback" not in err
    assert flag[0] in err and "the checkpoint has" in err and "start a new run" in err
    assert snapshot(run_dir) == before


def test_resume_needs_no_flag_but_the_folder_and_keeps_the_schedule(tmp_path, data_root, monkeypatch):
    run_dir = stopped_after_epoch_one(data_root, tmp_path / "runs", monkeypatch)
    args = train_script.get_args_parser().parse_args(["--root", data_root, "-j", "0", "--no_download",
                                                      "--resume", run_dir])
    train_script.main(args)
    lrs = [json.loads(line)["lr"] for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    # cosine over the run's 3 epochs from 0.05, typed out:
    # 0.05, 0.05 * (1 + cos(pi / 3)) / 2, 0.05 * (1 + cos(2pi / 3)) / 2
    assert lrs == pytest.approx([0.05, 0.0375, 0.0125])
    assert args.width == 8 and args.imbanlance_rate == 0.1 and args.epochs == 3


def test_resuming_a_finished_run_says_so_and_exits_0(tmp_path, data_root, capsys):
    train_script.main(parse("--root", data_root, "--epochs", "1", "--root_log", str(tmp_path / "runs")))
    run_dir = only_run(tmp_path / "runs")
    before = snapshot(run_dir)
    code, out, err = cli(train_script, TINY + ["--root", data_root, "--epochs", "1", "--resume", run_dir], capsys)
    assert code == 0 and "is finished (1/1 epochs" in out and "continuing" not in out
    assert snapshot(run_dir) == before


def test_checkpoint_missing_a_resume_key_is_refused_before_writing(tmp_path, data_root, monkeypatch, capsys):
    run_dir = stopped_after_epoch_one(data_root, tmp_path / "runs", monkeypatch)
    path = os.path.join(run_dir, "ckpt.pth.tar")
    state = torch.load(path, weights_only=False)
    del state["scheduler"], state["rng"], state["checksum"]
    torch.save(state, path)
    before = snapshot(run_dir)
    code, _, err = cli(train_script, TINY + ["--root", data_root, "--epochs", "3", "--resume", run_dir], capsys)
    assert code == 2 and "scheduler, rng" in err and "Traceback" not in err
    assert snapshot(run_dir) == before


def test_a_run_that_never_reached_a_checkpoint_gives_the_command_to_start_again(tmp_path, data_root, capsys):
    meta = train_script.main(parse("--root", data_root, "--epochs", "3", "--root_log", str(tmp_path / "runs"),
                                   "--dry_run"))
    run_dir = tmp_path / "runs" / "killed_in_epoch_1"  # what a run killed (kill -9) in its first epoch leaves
    run_dir.mkdir(parents=True)
    meta["args"]["dry_run"] = False
    (run_dir / "args.json").write_text(json.dumps({**meta, "command": meta["command"].replace(" --dry_run", "")}))
    code, _, err = cli(train_script, ["--resume", str(run_dir)], capsys)
    assert code == 2 and "no checkpoint" in err and "before its first epoch ended" in err
    assert "python main.py" in err and "--epochs 3" in err


def test_resuming_an_old_dry_run_folder_says_so_and_gives_the_real_command(tmp_path, data_root, capsys):
    meta = train_script.main(parse("--root", data_root, "--epochs", "3", "--root_log", str(tmp_path / "runs"),
                                   "--dry_run"))
    run_dir = tmp_path / "runs" / "dry"  # what a dry run of an older version left
    run_dir.mkdir(parents=True)
    (run_dir / "args.json").write_text(json.dumps(meta))
    assert "--dry_run" in meta["command"]
    code, _, err = cli(train_script, ["--resume", str(run_dir)], capsys)
    assert code == 2 and "was made by a dry run" in err and "--epochs 3" in err
    assert "--dry_run" not in err.split("Start the run with:")[1]


# ---------------------------------------------------------------- test.py and the MaxNorm stage read the checkpoint

def test_test_py_takes_the_groups_of_the_checkpoints_training_set(tmp_path, capsys, monkeypatch):
    root = str(tmp_path / "data")
    write_cifar(root, train_per_class=200, test_per_class=2)
    # IF 10 of 200 per class: 200, 154, 119, 92, 71, 55, 43, 33, 25, 20 -> 3 many (> 100), 6 medium, 1 few (<= 20);
    # the default IF 100 would give 200, 119, 71, 43, 25, 15, 9, 5, 3, 2 -> 2 many, 3 medium, 5 few.
    train_script.main(parse("--root", root, "--epochs", "1", "-b", "128", "--root_log", str(tmp_path / "runs")))
    run_dir = only_run(tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(test_script, ["--root", root, "-j", "0", "--resume", run_dir], capsys)
    assert code == 0, err
    assert "3 many, 6 medium, 1 few-shot classes" in out
    assert os.path.join(run_dir, "ckpt.best.pth.tar") in out  # says which file the folder meant
    # one epoch of the cumulative schedule never trains fc_cb: the run, and test.py, evaluate fc
    assert "classifier fc: the run's evaluation head: in a one-epoch run" in out
    report = json.load(open(os.path.join(run_dir, "eval", "best-fc.json")))
    assert report["group_sizes"] == {"many": 3, "medium": 6, "few": 1}
    assert report["train_counts"] == [200, 154, 119, 92, 71, 55, 43, 33, 25, 20]
    # a flag that contradicts the checkpoint names both values
    code, _, err = cli(test_script, ["--root", root, "-j", "0", "--resume", run_dir, "--imbanlance_rate", "0.01"],
                       capsys)
    assert code == 2 and "--imbanlance_rate 0.01 (the checkpoint has 0.1)" in err


def expected_subset(root, data_seed):
    """The CIFAR-LT images the released rule picks with `data_seed`, selected here by hand."""
    import pickle
    folder = os.path.join(root, "cifar-10-batches-py")
    images, labels = [], []
    for i in range(1, 6):
        with open(os.path.join(folder, f"data_batch_{i}"), "rb") as f:
            entry = pickle.load(f, encoding="bytes")
        images.append(np.asarray(entry[b"data"], dtype=np.uint8))
        labels += entry[b"labels"]
    images, labels = np.concatenate(images), np.asarray(labels)
    counts = [20, 15, 11, 9, 7, 5, 4, 3, 2, 2]  # int(20 * 0.1 ** (c / 9))
    np.random.seed(data_seed)
    keep = np.concatenate([np.random.choice(np.where(labels == c)[0], n, replace=False) for c, n in enumerate(counts)])
    return images[keep].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def test_maxnorm_stage_uses_the_checkpoints_images(tmp_path, data_root, monkeypatch, capsys):
    train_script.main(parse("--root", data_root, "--epochs", "1", "--seed", "1", "--data_seed", "0",
                            "--root_log", str(tmp_path / "runs")))
    run_dir = only_run(tmp_path / "runs")
    seen = {}
    real_make_loaders = maxnorm_stage.make_loaders

    def recording_make_loaders(data, *args, **kwargs):
        seen["images"] = data.train.images
        return real_make_loaders(data, *args, **kwargs)

    monkeypatch.setattr(maxnorm_stage, "make_loaders", recording_make_loaders)
    code, out, err = cli(maxnorm_stage, ["--root", data_root, "-j", "0", "--epochs", "1", "--resume", run_dir],
                         capsys)
    assert code == 0, err
    assert np.array_equal(seen["images"], expected_subset(data_root, 0))
    assert not np.array_equal(seen["images"], expected_subset(data_root, 1))
    report = json.load(open(os.path.join(run_dir, "eval", "maxnorm-best-epochs1-last.json")))
    assert report["kind"] == "maxnorm stage"


def test_seeds_with_a_fixed_data_seed_train_on_identical_images(tmp_path, data_root):
    def fingerprints(root_log, *extra):
        train_script.main_seeds(parse("--root", data_root, "--epochs", "1", "--seeds", "1,2", "--root_log",
                                      str(root_log), *extra))
        metas = [json.load(open(os.path.join(root_log, name, "args.json"))) for name in sorted(os.listdir(root_log))]
        return [m["train_fingerprint"] for m in metas], [m["args"]["data_seed"] for m in metas], sorted(
            os.listdir(root_log))

    fixed, data_seeds, names = fingerprints(tmp_path / "fixed", "--data_seed", "0")
    images = expected_subset(data_root, 0)
    labels = np.repeat(np.arange(10), [20, 15, 11, 9, 7, 5, 4, 3, 2, 2])
    by_hand = hashlib.sha1(np.ascontiguousarray(images).tobytes() + labels.astype(np.int64).tobytes()).hexdigest()
    assert fixed == [by_hand, by_hand] and data_seeds == [0, 0]
    assert all("_d0_" in name for name in names) and "s1_d0" in names[0] and "s2_d0" in names[1]
    following, data_seeds, _ = fingerprints(tmp_path / "following")
    assert following[0] != following[1] and data_seeds == [1, 2]  # as released: the seed picks the images


# ---------------------------------------------------------------- records that stay consistent

def test_a_first_epoch_at_zero_percent_still_has_a_best_checkpoint(tmp_path, data_root, monkeypatch):
    real_evaluate = train_script.evaluate

    def zero(*a, **kw):
        return {**real_evaluate(*a, **kw), "top1": 0.0}

    monkeypatch.setattr(train_script, "evaluate", zero)
    train_script.main(parse("--root", data_root, "--epochs", "2", "--root_log", str(tmp_path / "runs")))
    run_dir = only_run(tmp_path / "runs")
    best = torch.load(os.path.join(run_dir, "ckpt.best.pth.tar"), weights_only=False)
    assert best["epoch"] == 1 and best["best_acc1"] == 0.0


class Killed(BaseException):
    """Stands for kill -9: nothing after it runs (except the lock's release, which a real kill skips)."""


@pytest.mark.parametrize("killed_at", [2, 3], ids=["mid-run", "last-epoch"])
def test_death_between_the_latest_checkpoint_and_its_records_is_repaired(killed_at, tmp_path, data_root, monkeypatch,
                                                                         capsys):
    real_evaluate, real_save = train_script.evaluate, checkpoint_module.save_checkpoint
    accuracy = {"n": 0, "dead": False}

    def rising(*a, **kw):  # every epoch is the best so far
        if accuracy["dead"]:  # the checkpoint writer died: nothing more happens in this process
            raise Killed()
        accuracy["n"] += 10
        return {**real_evaluate(*a, **kw), "top1": float(accuracy["n"])}

    def latest_only(state, folder, is_best, every=20):
        if state["epoch"] == killed_at:
            checkpoint_module.atomic_save(state, os.path.join(folder, "ckpt.pth.tar"))
            accuracy["dead"] = True
            raise Killed()  # before the best copy and the metrics line
        return real_save(state, folder, is_best, every)

    monkeypatch.setattr(train_script, "evaluate", rising)
    monkeypatch.setattr(checkpoint_module, "save_checkpoint", latest_only)
    with pytest.raises(Killed):
        train_script.main(parse("--root", data_root, "--epochs", "3", "--root_log", str(tmp_path / "runs")))
    run_dir = only_run(tmp_path / "runs")
    assert epochs_in_metrics(run_dir) == list(range(1, killed_at))
    assert ckpt_epoch(os.path.join(run_dir, "ckpt.best.pth.tar")) == killed_at - 1
    monkeypatch.setattr(checkpoint_module, "save_checkpoint", real_save)
    accuracy["dead"] = False  # a new process
    capsys.readouterr()
    train_script.main(parse("--root", data_root, "--epochs", "3", "--resume", run_dir))
    out = capsys.readouterr().out
    assert "1 record added from the checkpoint" in out and "ckpt.best.pth.tar written from ckpt.pth.tar" in out
    records = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert [r["epoch"] for r in records] == [1, 2, 3] and [r["top1"] for r in records] == [10.0, 20.0, 30.0]
    best = torch.load(os.path.join(run_dir, "ckpt.best.pth.tar"), weights_only=False)
    assert best["epoch"] == 3 and best["best_acc1"] == 30.0
    if killed_at == 3:  # the run was finished: the repair is all the resume does
        assert "is finished (3/3 epochs" in out


def test_a_second_process_cannot_resume_a_run_in_use(tmp_path, data_root, monkeypatch, capsys):
    run_dir = stopped_after_epoch_one(data_root, tmp_path / "runs", monkeypatch)
    # a process holding the folder's lock as a run does: an exclusive flock on .lock, naming itself
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, json, os, socket, sys, time\n"
        f"fd = os.open({os.path.join(run_dir, '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, json.dumps({'pid': os.getpid(), 'host': socket.gethostname()}).encode())\n"
        "print('holding', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        before = snapshot(run_dir)
        code, _, err = cli(train_script, TINY + ["--root", data_root, "--epochs", "3", "--resume", run_dir], capsys)
        assert code == 2 and f"in use by process {holder.pid}" in err
        assert snapshot(run_dir) == before
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale and the resume takes it over
    code, _, err = cli(train_script, TINY + ["--root", data_root, "--epochs", "3", "--resume", run_dir], capsys)
    assert code == 0, err
    assert epochs_in_metrics(run_dir) == [1, 2, 3] and not os.path.exists(os.path.join(run_dir, ".lock"))


def test_leftover_temporary_checkpoint_is_removed_on_resume(tmp_path, data_root, monkeypatch):
    run_dir = stopped_after_epoch_one(data_root, tmp_path / "runs", monkeypatch)
    with open(os.path.join(run_dir, ".tmp_x1y2.pth.tar"), "wb") as f:
        f.write(b"half a checkpoint")
    train_script.main(parse("--root", data_root, "--epochs", "3", "--resume", run_dir))
    assert not [n for n in os.listdir(run_dir) if n.startswith(".tmp_")]


def test_non_finite_batchnorm_statistics_stop_before_saving(tmp_path, data_root, monkeypatch, capsys):
    real_epoch = train_script.train_one_epoch

    def epoch_then_blow_up(model, *a, **kw):
        stats = real_epoch(model, *a, **kw)
        unwrap(model).bn1.running_var.fill_(float("inf"))  # the loss itself stayed finite
        return stats

    monkeypatch.setattr(train_script, "train_one_epoch", epoch_then_blow_up)
    code, _, err = cli(train_script, TINY + ["--root", data_root, "--epochs", "1", "--root_log",
                                             str(tmp_path / "runs")], capsys)
    assert code == 3 and "bn1.running_var" in err and "Traceback" not in err
    assert not [n for n in os.listdir(only_run(tmp_path / "runs")) if n.endswith(".pth.tar")]


def test_a_failed_write_stops_with_exit_4_and_keeps_the_last_checkpoint(tmp_path, data_root, monkeypatch, capsys):
    real_save = checkpoint_module.torch.save

    def disk_full_at_epoch_2(obj, f):
        if isinstance(obj, dict) and obj.get("epoch") == 2:
            f.write(b"partial")
            raise OSError(28, "No space left on device")
        return real_save(obj, f)

    monkeypatch.setattr(checkpoint_module.torch, "save", disk_full_at_epoch_2)
    code, _, err = cli(train_script, TINY + ["--root", data_root, "--epochs", "3", "--root_log",
                                             str(tmp_path / "runs")], capsys)
    run_dir = only_run(tmp_path / "runs")
    assert code == 4 and "Traceback" not in err, err
    assert "No space left on device" in err and os.path.join(run_dir, "ckpt.pth.tar") in err
    assert "--resume" in err
    assert ckpt_epoch(os.path.join(run_dir, "ckpt.pth.tar")) == 1
    assert not [n for n in os.listdir(run_dir) if n.startswith(".tmp_")]
    assert "No space left on device" in open(os.path.join(run_dir, "log.txt")).read()


# ---------------------------------------------------------------- the run folder's files

def test_log_holds_the_stop_messages_and_files_share_permissions(tmp_path, data_root, monkeypatch):
    run_dir = stopped_after_epoch_one(data_root, tmp_path / "runs", monkeypatch)
    log = open(os.path.join(run_dir, "log.txt")).read()
    assert "SIGTERM received" in log and "stopped by SIGTERM after epoch 1" in log and "--resume" in log
    modes = {n: stat.S_IMODE(os.stat(os.path.join(run_dir, n)).st_mode) for n in os.listdir(run_dir)}
    assert modes["ckpt.pth.tar"] == modes["ckpt.best.pth.tar"] == modes["metrics.jsonl"] == modes["log.txt"]


def test_a_taken_run_folder_name_gets_a_suffix(tmp_path):
    for _ in range(2):
        new_run_folder(str(tmp_path / "runs"), "sweep")
    assert sorted(os.listdir(tmp_path / "runs")) == ["sweep", "sweep-2"]


def test_a_failed_download_leaves_nothing_under_root(tmp_path, monkeypatch, capsys):
    import torchvision.datasets.utils as tv_utils

    def failing_download(url, download_root, **kw):
        os.makedirs(download_root, exist_ok=True)
        with open(os.path.join(download_root, "cifar-10-python.tar.gz"), "wb") as f:
            f.write(b"part")
        raise OSError("network unreachable")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", failing_download)
    root = tmp_path / "new" / "cifar"
    argv = [a for a in TINY if a != "--no_download"] + ["--root", str(root), "--root_log", str(tmp_path / "runs")]
    code, _, err = cli(train_script, argv, capsys)
    assert code == 2 and "download failed" in err
    assert os.listdir(tmp_path) == []


def test_resume_command_in_a_subprocess_continues_the_same_folder(tmp_path, data_root):
    """The resume command printed on SIGTERM, run as printed, finishes the run in its folder."""
    cmd = [sys.executable, "-u", os.path.join(ROOT, "main.py"), *TINY, "--root", data_root, "--epochs", "2",
           "--root_log", str(tmp_path / "runs")]
    code, err = sigterm_when(cmd, "epoch 1/2 step 2/", cwd=ROOT)
    assert code == 128 + signal.SIGTERM, err
    command = err.strip().splitlines()[-1].strip()
    run_dir = only_run(tmp_path / "runs")
    assert command.startswith("python main.py") and command.endswith(f"--resume {run_dir}")
    resumed = subprocess.run([sys.executable, *command.split()[1:]], capture_output=True, text=True, timeout=300,
                             cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr
    assert epochs_in_metrics(run_dir) == [1, 2]


def test_resume_on_other_training_images_is_refused(tmp_path, data_root, monkeypatch, capsys):
    run_dir = stopped_after_epoch_one(data_root, tmp_path / "runs", monkeypatch)
    other = str(tmp_path / "other")
    write_cifar(other, train_per_class=20, test_per_class=3, seed=1)  # same counts, other pixels
    before = snapshot(run_dir)
    code, _, err = cli(train_script, TINY + ["--root", other, "--epochs", "3", "--resume", run_dir], capsys)
    assert code == 2 and "is not the one checkpoint" in err and other in err
    assert snapshot(run_dir) == before
