"""Hostile and damaged files: a checkpoint that would run code, flipped bytes, another run's checkpoint,
write failures of every kind, the lock race, text that is not UTF-8, a folder that goes away."""
import fcntl
import json
import os
import shutil
import socket

import numpy as np
import pytest
import torch

import main as train_script
import test as test_script
import utils.run_checkpoints as run_checkpoints
from models import build_model
from scripts import results
from tests.conftest import TINY_TRAIN, cli, stop_after_epoch_one, write_cifar
from utils import checkpoint as checkpoint_module
from utils import run_lock, safe_files
from utils.checkpoint import CorruptCheckpoint, read_checkpoint, save_checkpoint
from utils.errors import UsageError, WriteFailed
from utils.metrics_log import read_metrics
from utils.run_lock import RunLock
from utils.runs import read_resume_checkpoint_file
from utils.safe_files import check_writable


HOST = socket.gethostname()


def train(data_root, root_log, *extra, epochs=1):
    args = train_script.get_args_parser().parse_args(
        TINY_TRAIN + ["--root", data_root, "--epochs", str(epochs), "--root_log", str(root_log), *extra])
    train_script.main(args)
    (name,) = [n for n in os.listdir(root_log) if not n.startswith(".")]
    return os.path.join(root_log, name)


class CreatesAFile:
    """Unpickling this runs `open(path, 'w')`: what a hostile checkpoint can do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


# ---------------------------------------------------------------- checkpoints are data

@pytest.mark.slow
def test_a_checkpoint_that_runs_code_is_refused_unless_trusted(tmp_path, data_root, capsys):
    marker = tmp_path / "created_by_the_checkpoint"
    model = build_model("resnet32", 10, 8)
    evil = str(tmp_path / "evil.pth.tar")
    torch.save({"epoch": 1, "state_dict": model.state_dict(), "extra": CreatesAFile(str(marker))}, evil)
    argv = ["--dataset", "cifar10", "--root", data_root, "--width", "8", "--imbanlance_rate", "0.1", "-j", "0",
            "--no_download", "--resume", evil]
    code, _, err = cli(test_script, argv, capsys)
    assert code == 2 and "Traceback" not in err
    assert "(io.open)" in err and "--trust_checkpoint" in err
    assert not marker.exists()
    code, out, err = cli(test_script, argv + ["--trust_checkpoint"], capsys)
    assert marker.exists()  # the flag's documented cost: the file's code ran
    assert code == 0, err


def test_our_checkpoints_and_the_released_layout_load_as_data(tmp_path):
    model = build_model("resnet32", 10, 8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32))[0].sum().backward()
    optimizer.step()
    # what the released code's save_checkpoint stores: epoch, arch, DataParallel weights, best_acc1 (a tensor
    # from its accuracy function) and the optimizer's state
    weights = {"module." + k: v for k, v in model.state_dict().items()}
    released = {"epoch": 200, "arch": "resnet32", "state_dict": weights, "best_acc1": torch.tensor(88.49),
                "optimizer": optimizer.state_dict()}
    torch.save(released, tmp_path / "released.pth.tar")
    loaded = read_checkpoint(str(tmp_path / "released.pth.tar"))
    assert loaded["epoch"] == 200 and float(loaded["best_acc1"]) == pytest.approx(88.49)
    assert torch.equal(loaded["state_dict"]["module.fc_cb.weight"], model.fc_cb.weight)
    # ours: random states (numpy's is a tuple holding an array), scheduler, scaler, description, record
    ours = {"epoch": 3, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
            "rng": {"python": (3, tuple(range(625)), None), "numpy": np.random.RandomState(1).get_state(),
                    "torch": torch.get_rng_state(), "cuda": None},
            "scheduler": {"last_epoch": 3, "lr_lambdas": [{"epochs": 200}]}, "scaler": None,
            "run": {"args": {"seed": 1, "lr": 0.01}, "class_names": None}, "record": {"top1": 9.75}}
    save_checkpoint(ours, str(tmp_path), is_best=False)
    back = read_checkpoint(str(tmp_path / "ckpt.pth.tar"))
    assert np.array_equal(back["rng"]["numpy"][1], ours["rng"]["numpy"][1])
    assert back["run"] == ours["run"] and back["record"] == ours["record"]


# ---------------------------------------------------------------- flipped bytes

def flip_bytes_of(path, tensor):
    """Change one byte inside `tensor`'s data as stored in the file at `path`."""
    raw = bytearray(open(path, "rb").read())
    at = raw.find(tensor.numpy().tobytes())
    assert at >= 0
    raw[at + 5] ^= 0xFF
    open(path, "wb").write(bytes(raw))


def test_a_flipped_byte_is_caught_and_the_newest_good_copy_is_offered(tmp_path):
    weights = {"w": torch.arange(1000, dtype=torch.float32) * 0.37}
    folder = str(tmp_path)
    for epoch in (19, 20, 21):  # 20_ckpt.pth.tar is a copy of epoch 20; ckpt.best.pth.tar of epoch 19
        save_checkpoint({"epoch": epoch, "state_dict": {"w": weights["w"] + epoch}}, folder, is_best=epoch == 19)
    latest = os.path.join(folder, "ckpt.pth.tar")
    flip_bytes_of(latest, weights["w"] + 21)
    with pytest.raises(CorruptCheckpoint, match="corrupted") as caught:
        read_resume_checkpoint_file(latest)
    message = str(caught.value)
    assert "20_ckpt.pth.tar (epoch 20)" in message and f"python main.py --resume {latest}" in message
    flip_bytes_of(os.path.join(folder, "20_ckpt.pth.tar"), weights["w"] + 20)
    with pytest.raises(CorruptCheckpoint, match=r"ckpt.best.pth.tar \(epoch 19\)"):
        read_resume_checkpoint_file(latest)
    flip_bytes_of(os.path.join(folder, "ckpt.best.pth.tar"), weights["w"] + 19)
    with pytest.raises(CorruptCheckpoint, match="No good copy"):
        read_resume_checkpoint_file(latest)


@pytest.mark.slow
def test_resuming_a_corrupted_run_stops_with_exit_2(tmp_path, data_root, capsys):
    run_dir = train(data_root, tmp_path / "runs")
    latest = os.path.join(run_dir, "ckpt.pth.tar")
    flip_bytes_of(latest, read_checkpoint(latest)["state_dict"]["fc.weight"])
    code, _, err = cli(train_script, ["--resume", run_dir, "--epochs", "2"], capsys)
    assert code == 2 and "corrupted" in err and "Traceback" not in err


# ---------------------------------------------------------------- another run's checkpoint

@pytest.mark.slow
def test_another_runs_checkpoint_is_not_resumed_into_a_folder(tmp_path, data_root, capsys):
    ours = train(data_root, tmp_path / "a", "--seed", "3407", epochs=2)
    theirs = train(data_root, tmp_path / "b", "--seed", "1", epochs=2)
    os.remove(os.path.join(ours, "ckpt.pth.tar"))
    shutil.copy(os.path.join(theirs, "ckpt.pth.tar"), os.path.join(ours, "ckpt.pth.tar"))
    code, _, err = cli(train_script, ["--resume", ours, "--epochs", "3"], capsys)
    assert code == 2 and "Traceback" not in err
    assert "is not the run of its folder" in err and "--seed 1 here, 3407 there" in err
    assert [json.loads(line)["epoch"] for line in open(os.path.join(ours, "metrics.jsonl"))] == [1, 2]


# ---------------------------------------------------------------- write failures

@pytest.mark.slow
@pytest.mark.parametrize("raised", ["wrapped", "bare"])
def test_torch_save_failing_with_a_runtime_error_ends_with_exit_4(raised, tmp_path, data_root, monkeypatch, capsys):
    real_save = checkpoint_module.torch.save

    def full_disk_at_epoch_2(obj, f):
        if isinstance(obj, dict) and obj.get("epoch") == 2:
            f.write(b"partial")
            if raised == "bare":
                raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos 4096 vs 4032")
            try:
                raise OSError(28, "No space left on device")
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos 4096 vs 4032")
        return real_save(obj, f)

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk_at_epoch_2)
    code, _, err = cli(train_script, TINY_TRAIN + ["--root", data_root, "--epochs", "3", "--root_log",
                                                   str(tmp_path / "runs")], capsys)
    assert code == 4 and "Traceback" not in err, err
    assert ("No space left on device" if raised == "wrapped" else "RuntimeError: [enforce fail") in err
    assert "--resume" in err


def denied(*args, **kwargs):
    raise PermissionError(13, "Permission denied")


def test_a_stale_lock_in_a_folder_that_cannot_be_written(tmp_path, monkeypatch, capsys):
    """(Made read-only by refusing writes: chmod does not stop root, who runs CI.)"""
    folder = str(tmp_path)
    (tmp_path / ".lock").write_text(json.dumps({"pid": 999999999, "host": HOST}))  # left by a killed run
    real_open = os.open

    def read_only_folder(path, flags, *mode):
        return denied() if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) else real_open(path, flags, *mode)

    monkeypatch.setattr(run_lock.os, "open", read_only_folder)
    monkeypatch.setattr(run_lock.os, "remove", denied)
    monkeypatch.setattr(safe_files, "open", denied, raising=False)
    lock = RunLock(folder).acquire()  # the file can still be locked; the write check stops the run next
    with pytest.raises(WriteFailed, match=f"cannot write {folder}: Permission denied"):
        check_writable(folder)
    lock.release()
    assert capsys.readouterr().err == "" and (tmp_path / ".lock").exists()  # known to stay: nothing to say
    monkeypatch.undo()
    RunLock(folder).acquire().release()  # the file that stayed locks nothing
    assert not (tmp_path / ".lock").exists()
    with pytest.raises(WriteFailed, match="no longer exists"):
        check_writable(str(tmp_path / "deleted"))


def test_a_lock_that_unexpectedly_cannot_be_removed_is_named(tmp_path, monkeypatch, capsys):
    lock = RunLock(str(tmp_path)).acquire()
    monkeypatch.setattr(run_lock.os, "remove", denied)
    lock.release()
    assert "could not be removed (Permission denied)" in capsys.readouterr().err and not lock.held
    monkeypatch.undo()
    RunLock(str(tmp_path)).acquire().release()  # the file that stayed locks nothing
    assert not (tmp_path / ".lock").exists()


def test_the_lock_race_one_process_takes_it_the_other_is_refused(tmp_path, monkeypatch):
    """A stale lock (its process is gone), two processes taking it over; the first one pauses between
    opening the lock file and locking it, and the second takes the lock in that pause."""
    folder = str(tmp_path)
    (tmp_path / ".lock").write_text(json.dumps({"pid": 999999999, "host": HOST}))
    second = RunLock(folder)
    real_flock = fcntl.flock
    paused = []

    def pause_once(fd, operation):
        if not paused:
            paused.append(True)
            second.acquire()  # what happens while the first process is paused
        return real_flock(fd, operation)

    monkeypatch.setattr(run_lock.fcntl, "flock", pause_once)
    with pytest.raises(UsageError, match=f"in use by process {os.getpid()}"):
        RunLock(folder).acquire()
    assert second.held
    second.release()
    assert not (tmp_path / ".lock").exists()
    # and the other order: the holder releases during the pause; the paused process then holds a removed
    # file, notices, and takes the new one
    first = RunLock(folder).acquire()
    paused.clear()
    other = RunLock(folder)

    def release_during_pause(fd, operation):
        if not paused:
            paused.append(True)
            first.release()
            third.acquire()
        return real_flock(fd, operation)

    third = RunLock(folder)
    monkeypatch.setattr(run_lock.fcntl, "flock", release_during_pause)
    with pytest.raises(UsageError, match="in use"):
        other.acquire()
    assert third.held and not other.held
    third.release()


# ---------------------------------------------------------------- links in a copied run folder

@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, data_root_module):
    """A run of 2 epochs stopped after the first (SIGTERM during its evaluation): a resume trains on."""
    root_log = tmp_path_factory.mktemp("stopped")
    with pytest.MonkeyPatch.context() as patch:
        stop_after_epoch_one(patch, ["--root", data_root_module, "--epochs", "2", "--root_log", str(root_log),
                                     "--name", "stopped"])
    return os.path.join(root_log, "stopped")


@pytest.fixture(scope="module")
def data_root_module(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data"))
    write_cifar(root, train_per_class=20, test_per_class=3)
    return root


def plant_link(run_copy, name, victim_dir):
    """Replace `name` in the copied run folder by a link to a file of the user outside it (a copy of the
    real file where the resume has to read it first, else other bytes); returns (link, victim, its bytes)."""
    link = os.path.join(run_copy, name)
    victim = os.path.join(victim_dir, "precious-" + name.replace("/", "_"))
    if os.path.isfile(link) and name.endswith(".pth.tar"):
        shutil.copy(link, victim)
    else:
        with open(victim, "wb") as f:
            f.write(b"the user's own file")
    if os.path.lexists(link):
        os.remove(link)
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(victim, link)
    return link, victim, open(victim, "rb").read()


@pytest.mark.slow
@pytest.mark.parametrize("name", [".lock", "log.txt", "metrics.jsonl", "args.json", "ckpt.pth.tar",
                                  "ckpt.best.pth.tar", "20_ckpt.pth.tar", "events.out.tfevents.1.host.1.0"])
def test_a_link_in_a_copied_run_folder_stops_the_resume_before_anything_is_written(name, stopped_run, tmp_path,
                                                                                  capsys):
    run_copy = str(tmp_path / "copied")
    shutil.copytree(stopped_run, run_copy)
    victims = tmp_path / "elsewhere"
    victims.mkdir()
    link, victim, before = plant_link(run_copy, name, str(victims))
    listing = sorted(os.listdir(run_copy))
    code, _, err = cli(train_script, ["--resume", run_copy], capsys)
    assert code == 2 and "Traceback" not in err
    assert f"{link} is a symbolic link to {victim!r}" in err and "nothing was written" in err
    assert open(victim, "rb").read() == before and sorted(os.listdir(victims)) == [os.path.basename(victim)]
    assert sorted(os.listdir(run_copy)) == listing  # no lock taken, no log line, no checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("name", ["eval", "eval/best-fc_cb.json"])
def test_test_py_writes_no_report_through_a_link(name, stopped_run, tmp_path, capsys):
    run_copy = str(tmp_path / "copied")
    shutil.copytree(stopped_run, run_copy)
    victims = tmp_path / "elsewhere"
    victims.mkdir()
    if name == "eval":  # the report folder itself links to a folder of the user
        os.symlink(str(victims), os.path.join(run_copy, "eval"))
        link, target = os.path.join(run_copy, "eval"), str(victims)
    else:
        link, target, _ = plant_link(run_copy, name, str(victims))
    before = {n: open(os.path.join(victims, n), "rb").read() for n in os.listdir(victims)}
    code, _, err = cli(test_script, ["--resume", run_copy], capsys)
    assert code == 2 and f"{link} is a symbolic link to {target!r}" in err
    assert {n: open(os.path.join(victims, n), "rb").read() for n in os.listdir(victims)} == before


@pytest.mark.slow
def test_reading_a_run_folder_says_when_a_file_links_out_of_it(stopped_run, tmp_path, capsys):
    run_copy = str(tmp_path / "copied")
    shutil.copytree(stopped_run, run_copy)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = str(elsewhere / "metrics.jsonl")
    shutil.move(os.path.join(run_copy, "metrics.jsonl"), moved)
    os.symlink(moved, os.path.join(run_copy, "metrics.jsonl"))
    assert results.main([str(tmp_path / "copied")]) == 0
    captured = capsys.readouterr()
    assert f"{os.path.join(run_copy, 'metrics.jsonl')} is a symbolic link to {moved}, outside its folder" \
        in captured.err
    inside = os.path.join(run_copy, "log-link.txt")  # a link within the folder is no news
    os.symlink(os.path.join(run_copy, "log.txt"), inside)
    assert safe_files.link_note(run_copy, inside) is None


# ---------------------------------------------------------------- text that is not UTF-8

def test_metrics_with_bytes_that_are_not_utf8_skip_that_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"epoch": 1, "top1": 9.5}\n\xff\xfe{"epoch": 2}\n{"epoch": 3, "top1": 11.0}\n')
    warnings = []
    assert [r["epoch"] for r in read_metrics(str(path), warnings.append)] == [1, 3]
    assert warnings == [f"{path}, line 2: not a complete metrics record; skipped"]


@pytest.mark.slow
def test_resume_and_results_survive_a_metrics_line_that_is_not_utf8(tmp_path, data_root, capsys):
    run_dir = train(data_root, tmp_path / "runs", epochs=2)
    metrics = os.path.join(run_dir, "metrics.jsonl")
    with open(metrics, "ab") as f:
        f.write(b"\xff\xfe garbage\n")
    code = results.main([str(tmp_path / "runs")])
    out, err = capsys.readouterr()
    assert not code and "line 3" in err and "Traceback" not in err
    code, out, err = cli(train_script, ["--resume", run_dir], capsys)  # finished: tidied, nothing trained
    assert code == 0 and "1 torn line removed" in out, err
    assert [json.loads(line)["epoch"] for line in open(metrics)] == [1, 2]


# ---------------------------------------------------------------- a folder that goes away

@pytest.mark.slow
def test_a_deleted_run_folder_is_noticed_before_the_next_epoch_trains(tmp_path, data_root, monkeypatch, capsys):
    epochs_trained = []
    real_epoch, real_save = train_script.train_one_epoch, run_checkpoints.RunCheckpoints.save

    def counting_epoch(*a, **kw):
        epochs_trained.append(1)
        return real_epoch(*a, **kw)

    def save_then_delete(self, *a, **kw):
        real_save(self, *a, **kw)
        self.wait()
        shutil.rmtree(self.run_dir)

    monkeypatch.setattr(train_script, "train_one_epoch", counting_epoch)
    monkeypatch.setattr(run_checkpoints.RunCheckpoints, "save", save_then_delete)
    code, _, err = cli(train_script, TINY_TRAIN + ["--root", data_root, "--epochs", "3", "--root_log",
                                                   str(tmp_path / "runs")], capsys)
    assert code == 4 and "no longer exists" in err and "deleted or moved" in err and "Traceback" not in err
    assert len(epochs_trained) == 1


def test_the_resume_that_finds_no_checkpoint_clears_what_the_killed_run_left(tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    (tmp_path / "run" / "args.json").write_text(json.dumps({"command": "python main.py --epochs 2"}))
    (tmp_path / "run" / ".tmp_abc123.pth.tar").write_bytes(b"partial")  # killed in its first checkpoint write
    (tmp_path / "run" / ".lock").write_text(json.dumps({"pid": 999999999, "host": HOST}))
    code, _, err = cli(train_script, ["--resume", run_dir], capsys)
    assert code == 2 and "nothing to resume" in err and ".tmp_abc123.pth.tar" in err
    assert sorted(n for n in os.listdir(run_dir) if n.startswith(".")) == []


def test_an_image_list_line_that_is_not_utf8_is_skipped_with_a_warning(tmp_path, capsys):
    from datasets.image_files import read_image_list
    listing = tmp_path / "train.txt"
    listing.write_bytes(b"a/1.jpg 0\nb/\xff\xfe.jpg 1\nc/3.jpg 2\n")
    paths, labels = read_image_list(str(listing), "ROOT", 3, "--dir_train_txt")
    assert paths == [os.path.join("ROOT", "a/1.jpg"), os.path.join("ROOT", "c/3.jpg")] and labels == [0, 2]
    assert f"warning: {listing}, line 2: not UTF-8 text; skipped" in capsys.readouterr().err
