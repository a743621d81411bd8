"""What a newcomer meets first: threads, flags, dry runs, outputs that need no second flag, tidy figures."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

import main as train_script
import test as test_script
from scripts import maxnorm_stage
from tests.conftest import ROOT, TINY_TRAIN, cli, write_cifar
from utils import speed
from utils.distributed import World
from utils.run_log import write_json
from utils.metrics_log import append_metrics
from utils.sweep import DONE, Job, Sweep


def train(data_root, root_log, *extra, epochs=1):
    train_script.main(train_script.get_args_parser().parse_args(
        TINY_TRAIN + ["--root", data_root, "--epochs", str(epochs), "--root_log", str(root_log), *extra]))
    (name,) = os.listdir(root_log)
    return os.path.join(root_log, name)


# ---------------------------------------------------------------- threads

def test_threads_come_from_the_flag_then_the_environment_then_the_idle_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert speed.choose_threads(5) == (5, "--threads")
    assert speed.choose_threads(None) == (3, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(speed.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    for idle, threads in ((0.0, 1), (0.4, 1), (1.6, 2), (3.9, 4), (7.5, 4)):  # at least one, at most the cores
        monkeypatch.setattr(speed, "idle_cores", lambda interval=0.2, idle=idle: idle)
        assert speed.choose_threads(None)[0] == threads


def test_runs_started_together_share_the_cores(monkeypatch):
    monkeypatch.setattr(speed.os, "sched_getaffinity", lambda pid: set(range(16)))
    for runs, threads in ((1, 16), (2, 8), (4, 4), (3, 5), (16, 1), (40, 1)):  # 16 // runs, at least one
        assert speed.threads_each(runs) == threads


def test_runs_a_sweep_starts_share_the_cores_idle_at_that_moment(monkeypatch):
    monkeypatch.setattr(speed.os, "sched_getaffinity", lambda pid: set(range(16)))
    # (idle cores, runs starting together) -> threads each: idle / runs, rounded, at least 1, at most the cores
    for idle, runs, threads in ((16.0, 1, 16), (12.3, 3, 4), (16.0, 4, 4), (1.2, 1, 1), (0.0, 2, 1), (20.0, 1, 16)):
        monkeypatch.setattr(speed, "idle_cores", lambda interval=0.2, idle=idle: idle)
        each, why = speed.share_idle_cores(runs)
        assert each == threads and f"{idle:.1f} of 16 cores were idle" in why
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv(speed.THREADS_REASON, "set by the sweep: because")
    assert speed.choose_threads(None) == (3, "set by the sweep: because")


@pytest.mark.slow
def test_a_sweep_beside_busy_processes_gives_its_run_one_thread(tmp_path, data_root, monkeypatch):
    """Every core kept busy by loops of our own: the sweep's child (a dry run, which prints its threads line)
    is given one thread, and its first lines say why; a child given all the cores would crawl."""
    monkeypatch.delenv("OMP_NUM_THREADS")  # nothing set by the user: the sweep decides
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(speed.usable_cores())]
    try:
        time.sleep(1.0)  # the loops are running
        job = Job("one", [os.path.join(ROOT, "main.py"), *TINY_TRAIN, "--root", data_root, "--epochs", "1",
                          "--dry_run", "--root_log", str(tmp_path / "runs")], str(tmp_path / "one.log"))
        Sweep([job], [None], 1, say=lambda message: None).run()
    finally:
        for loop in loops:
            loop.kill()
    log = open(job.log).read()
    assert job.state == DONE, log
    assert "CPU threads: 1 (set by the sweep: " in log and f"of {speed.usable_cores()} cores were idle" in log


def test_idle_cores_reads_the_ticks_of_proc_stat(monkeypatch, tmp_path):
    samples = iter(["cpu  100 0 100 800 0 0 0 0 0 0\n", "cpu  250 0 150 900 0 0 0 0 0 0\n"])
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: (
        __import__("io").StringIO(next(samples)) if path == "/proc/stat" else real_open(path, *a, **k)))
    monkeypatch.setattr(speed.time, "sleep", lambda s: None)
    monkeypatch.setattr(speed.os, "cpu_count", lambda: 2)
    # between the samples: 150 + 50 busy ticks and 100 idle ticks of 300, on 2 cores
    assert speed.idle_cores() == pytest.approx(100 / 300 * 2)


# ---------------------------------------------------------------- the command line

def test_flags_are_not_abbreviated_and_a_bad_flag_gets_a_short_error(capsys):
    with pytest.raises(SystemExit) as exc:
        train_script.get_args_parser().parse_args(["--epoch", "3"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "unrecognized arguments: --epoch 3" in err
    assert len(err.strip().splitlines()) == 2 and "--help" in err


def test_a_dry_run_writes_nothing_and_counts_steps_in_words(tmp_path, capsys):
    root = str(tmp_path / "data")
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    write_cifar(root, train_per_class=20, test_per_class=3, class_names=names)
    train_script.main(train_script.get_args_parser().parse_args(
        TINY_TRAIN + ["--root", root, "-b", "128", "--dry_run", "--root_log", str(tmp_path / "runs")]))
    out = capsys.readouterr().out
    assert "dry run: 1 step per epoch" in out and not (tmp_path / "runs").exists()
    counts = [int(20 * 0.1 ** (c / 9)) for c in range(10)]
    assert "airplane 20, automobile 15, bird 11" in out and f"truck {counts[-1]}" in out


# ---------------------------------------------------------------- figures as they mean

def test_json_figures_lose_their_float_noise(tmp_path):
    record = {"epoch": 1, "top1": 49.220000000000006, "lr": 6.168375e-07, "loss": -3.60681234567891}
    append_metrics(str(tmp_path / "metrics.jsonl"), record)
    write_json(str(tmp_path / "r.json"), {"per_class": [33.300000000000004], "top1": record["top1"]})
    line = (tmp_path / "metrics.jsonl").read_text()
    assert '"top1": 49.22,' in line and '"lr": 6.168375e-07' in line and '"loss": -3.606812346' in line
    assert json.loads((tmp_path / "r.json").read_text()) == {"per_class": [33.3], "top1": 49.22}


# ---------------------------------------------------------------- outputs that need no second flag

@pytest.mark.slow
def test_evaluation_takes_the_data_root_from_the_checkpoint(tmp_path, capsys, monkeypatch):
    data_root = str(tmp_path / "somewhere" / "cifar")
    write_cifar(data_root, train_per_class=20, test_per_class=3)
    run_dir = train(data_root, tmp_path / "runs")
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)  # where the default root, data/, holds nothing
    code, out, err = cli(test_script, ["--resume", run_dir, "--plot"], capsys)
    assert code == 0, err
    assert f"data root {data_root} (recorded in checkpoint" in out
    (report,) = [n for n in os.listdir(os.path.join(run_dir, "eval")) if n.endswith(".json")]
    assert os.path.isfile(os.path.join(run_dir, "eval", report[:-len(".json")] + ".png"))  # --plot alone
    code, out, err = cli(maxnorm_stage, ["--resume", run_dir, "--epochs", "1", "-j", "0"], capsys)
    assert code == 0 and f"data root {data_root}" in out
    assert "the stage's first epoch trains at learning rate 0" in err  # --epochs 1 trains nothing: said so
    assert "\n  last epoch: " in out and out.index("after, best epoch") < out.index("written:")
    shutil.move(data_root, str(tmp_path / "moved"))
    code, out, err = cli(test_script, ["--resume", run_dir, "--no_download"], capsys)
    assert code == 2 and data_root in out + err and "'data'" in out + err


@pytest.mark.slow
def test_only_rank_zero_says_which_data_root_a_resume_takes(tmp_path, capsys, monkeypatch):
    data_root = str(tmp_path / "somewhere" / "cifar")
    write_cifar(data_root, train_per_class=20, test_per_class=3)
    run_dir = train(data_root, tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    said = {}
    for rank in (0, 1):
        capsys.readouterr()
        args = train_script.get_args_parser().parse_args(["--resume", run_dir])
        train_script.read_resume_checkpoint(args, World(rank=rank, size=1))
        assert args.root == data_root  # every process takes the recorded root
        said[rank] = capsys.readouterr().out
    assert f"data root {data_root} (recorded in checkpoint" in said[0] and "data root" not in said[1]


@pytest.mark.slow
def test_an_epochs_seconds_include_the_part_before_a_mid_epoch_stop(tmp_path, data_root, capsys):
    run_dir = train(data_root, tmp_path / "runs", epochs=2)
    latest = os.path.join(run_dir, "ckpt.pth.tar")
    checkpoint = torch.load(latest, weights_only=False)
    # as if the second epoch had trained 1000 s, then stopped after its first step
    checkpoint["in_epoch"] = {"step": 1, "seen": 16, "sums": {}, "seconds": 1000.0}
    checkpoint["epoch"], checkpoint["record"] = 1, None  # what a mid-epoch checkpoint holds
    del checkpoint["checksum"]  # edited on purpose
    torch.save(checkpoint, latest)
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        first = f.readline()
    open(os.path.join(run_dir, "metrics.jsonl"), "w").write(first)
    code, _, err = cli(train_script, ["--resume", run_dir], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert [r["epoch"] for r in records] == [1, 2] and records[1]["seconds"] > 1000.0


# ---------------------------------------------------------------- small things a newcomer trips on

@pytest.mark.parametrize("script,argv,typo,meant", [
    ("main.py", [], "--epoch", "--epochs"), ("test.py", ["--resume", "x"], "--hed", "--head"),
    ("scripts/maxnorm_stage.py", ["--resume", "x"], "--epoch", "--epochs"),
    ("scripts/reproduce.py", ["cifar10-lt"], "--seed", "--seeds")])
def test_a_near_miss_flag_gets_a_did_you_mean(script, argv, typo, meant):
    done = subprocess.run([sys.executable, os.path.join(ROOT, script), *argv, typo, "3"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and f"{typo}: did you mean {meant}?" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 2


def test_files_that_are_not_checkpoints_are_named_for_what_they_are(tmp_path, capsys):
    (tmp_path / "report.json").write_text('{"top1": 1}')
    (tmp_path / "log.txt").write_text("run folder: x\nepoch 1/1 ...\n")
    (tmp_path / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    for name, kind in (("report.json", "JSON text"), ("log.txt", "text"), ("plot.png", "a PNG image")):
        code, _, err = cli(test_script, ["--resume", str(tmp_path / name)], capsys)
        assert code == 2 and f"is not a PyTorch checkpoint: it is {kind}" in err and "--trust_checkpoint" not in err


def test_a_message_ends_a_quoted_sentence_with_one_full_stop():
    from utils.errors import tidy_message
    assert tidy_message("cannot read 'x': it is broken.. Is the file") == "cannot read 'x': it is broken. Is the file"
    assert tidy_message("wait ... or not") == "wait ... or not"


def test_a_network_too_wide_is_told_to_narrow_not_to_lower_the_batch(tmp_path, data_root, capsys):
    code, _, err = cli(train_script, TINY_TRAIN + ["--root", data_root, "--epochs", "1", "--width", "100000",
                                                   "--root_log", str(tmp_path / "runs")], capsys)
    assert code == 2 and "use a smaller --width" in err and "Lower -b" not in err


def test_the_sweeps_commands_give_each_flag_once_and_refuse_the_sweeps_own_flags(capsys):
    from scripts import reproduce, table_runs
    base = ["--dataset", "cifar10", "-a", "resnet32", "--epochs", "200", "-b", "64", "--lr", "0.01",
            "--balanced_softmax", "--weight_decay", "5e-3"]
    assert table_runs.with_extra(base, ["--epochs", "1", "--batch_size", "16", "--wd", "0"]) == [
        "--dataset", "cifar10", "-a", "resnet32", "--lr", "0.01", "--balanced_softmax", "--epochs", "1",
        "--batch_size", "16", "--wd", "0"]
    for extra, instead in (("--root /data", "reproduce.py's --root DIR"), ("--seed 4", "--seeds N"),
                           ("--name x", "--out DIR"), ("--epochs 2 --root_log runs", "--out DIR")):
        with pytest.raises(SystemExit) as exited:
            reproduce.cli(["cifar10-lt", "--extra", extra, "--dry_run"])
        err = capsys.readouterr().err
        assert exited.value.code == 2 and "which the sweep sets for every run itself" in err and instead in err


def test_the_sweeps_table_tells_a_run_that_never_ran_from_an_empty_shot_group():
    from glmc.paper_tables import TABLES
    from scripts import table_report
    row = {"row": "CIFAR-10-LT, IF 100", "column": "glmc", "published": 87.75, "published_groups": "",
           "best_std": None, "diff": None, "last_mean": None, "last_std": None, "minutes_per_run": None,
           "missing": "s1 (failed)"}
    never = {**row, "n": 0, "best_mean": None, "many": None, "medium": None, "few": None}
    ran = {**row, "n": 1, "best_mean": 20.0, "many": 30.0, "medium": 10.0, "few": None}
    text = table_report.markdown("t", TABLES["cifar10-lt"], [never, ran], [1],
                                 argparse.Namespace(extra="", maxnorm_extra=""))
    lines = [line for line in text.splitlines() if line.startswith("| CIFAR-10-LT")]
    assert lines[0].count("| — |") >= 3 and "empty" not in lines[0]
    assert "| 30.00 | 10.00 | empty |" in lines[1]


def test_the_sweeps_csv_has_no_float_noise(tmp_path):
    from scripts import table_report
    row = {k: None for k in table_report.CSV_FIELDS}
    row.update({"row": "r", "column": "c", "published": 87.75, "best_mean": 0.1 + 0.2, "n": 1})
    assert str(row["best_mean"]) == "0.30000000000000004"  # the noise a sum leaves
    table_report.write_csv(str(tmp_path / "t.csv"), [row])
    assert "r,c,87.75,1,0.3," in (tmp_path / "t.csv").read_text()
