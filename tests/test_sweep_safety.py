"""A sweep never loses, mixes or mislabels a run: two sweeps on one folder, a closed terminal, a second
Ctrl-C, another data root, a torchrun row stopped by a signal, a dry run without data."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import main as train_script
from scripts import reproduce
from tests.conftest import ROOT, TINY_TRAIN, cli, write_cifar
from utils.sweep import STOPPED, Job, Sweep

pytestmark = pytest.mark.slow

EXTRA = "--epochs 3 --width 8 -j 0 --no_download -p 1"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("sweep") / "data")
    write_cifar(folder, train_per_class=100, test_per_class=3)
    return folder


def sweep_command(root, out, *more):
    return [sys.executable, "-u", os.path.join(ROOT, "scripts", "reproduce.py"), "cifar10-lt", "--seeds", "1",
            "--rows", "cifar10-if100", "--root", root, "--extra", EXTRA, "--maxnorm_extra", "--epochs 2 -j 0",
            "--progress_every", "0.5", "--out", str(out), *more]


def start_sweep(root, out):
    """A sweep in its own process, returned once one of its runs is training."""
    proc = subprocess.Popen(sweep_command(root, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    for line in proc.stdout:
        if " step " in line and "running (" in line:
            return proc
    raise AssertionError(proc.communicate()[1])


def test_a_second_sweep_on_the_same_folder_is_refused_and_deletes_nothing(root, tmp_path):
    out = tmp_path / "out"
    first = start_sweep(root, out)
    try:
        listing = sorted(os.listdir(out / "runs"))
        second = subprocess.run(sweep_command(root, out), capture_output=True, text=True, cwd=ROOT, timeout=300,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert second.returncode == 2, second.stderr
        assert f"sweep folder {str(out)!r} is in use by process {first.pid}" in second.stderr
        assert sorted(os.listdir(out / "runs")) == listing  # the live run folder is still there
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=300)
    assert not any(name.endswith("-2") for name in os.listdir(out / "runs"))


def test_a_closed_terminal_stops_the_sweep_cleanly_and_the_record_says_how_to_go_on(root, tmp_path):
    out = tmp_path / "out"
    proc = start_sweep(root, out)
    proc.send_signal(signal.SIGHUP)  # what closing the terminal sends
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGHUP, err
    log = (out / "sweep.log").read_text()
    assert "stopping: SIGTERM to 1 running run" in log and "1 stopped" in log
    assert "Continue with:" in log and "reproduce.py cifar10-lt" in log
    run = out / "runs" / "cifar10-if100-glmc-s1"
    assert (run / "ckpt.pth.tar").exists() and "stopped by SIGTERM" in (run / "log.txt").read_text()


def test_a_second_ctrl_c_is_quiet_and_still_says_how_to_go_on(root, tmp_path):
    out = tmp_path / "out"
    proc = start_sweep(root, out)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGINT and "Traceback" not in err, err
    assert "Continue with:" in err and "second signal" in (out / "sweep.log").read_text()


def test_the_refusal_names_both_roots(root, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / reproduce.MANIFEST).write_text(
        '{"table": "cifar10-lt", "extra": "", "maxnorm_extra": "", "root": "/data/first", "seconds": {}}')
    with pytest.raises(SystemExit) as exited:
        reproduce.cli(["cifar10-lt", "--root", root, "--out", str(out), "--dry_run"])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert f"holds a sweep made with data root '/data/first', not {os.path.abspath(root)!r}" in err


def test_a_dry_run_without_data_shows_the_whole_plan_then_the_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        reproduce.cli(["cifar10-lt", "--seeds", "2", "--root", str(tmp_path / "nothing"), "--extra=--no_download",
                       "--out", str(tmp_path / "out"), "--dry_run"])
    out, err = capsys.readouterr()
    assert exited.value.code == 2
    assert out.count(": to run") == 24 and "cifar10-if10-glmc-maxnorm-s2: to run" in out  # 3 rows x 4 x 2 seeds
    assert "the first run (cifar10-if100-glmc-s1) does not start" in err


def test_a_torchrun_row_stopped_by_a_signal_is_stopped_not_failed(tmp_path):
    """torchrun exits 1 when its workers stop on SIGTERM; the workers' own line says they saved and stopped."""
    script = ("import signal, sys, time\n"
              "def stop(*_):\n"
              "    print('stopped by SIGTERM at epoch 1, step 2/5; the run resumes mid-epoch at step 3:', flush=True)\n"
              "    sys.exit(1)\n"
              "signal.signal(signal.SIGTERM, stop)\n"
              "print('epoch 1/2 step 1/5 loss 1.0 lr 0.1 10 img/s', flush=True)\n"
              "time.sleep(60)\n")
    job = Job("torchrun-row", ["-c", script], str(tmp_path / "row.log"), epochs=2)
    sweep = Sweep([job], [None], 1, say=lambda message: None)

    def stop_soon():
        time.sleep(2.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_soon, daemon=True).start()
    assert sweep.run() == signal.SIGTERM
    assert job.state == STOPPED


def test_a_name_the_sweep_gives_is_never_taken_twice(tmp_path, data_root, capsys):
    argv = TINY_TRAIN + ["--root", data_root, "--epochs", "1", "--root_log", str(tmp_path / "runs"), "--name", "x"]
    assert cli(train_script, argv, capsys)[0] == 0
    code, _, err = cli(train_script, argv, capsys)
    assert code == 2 and "run folder" in err and "already exists (--name x)" in err and "--resume" in err
    assert sorted(os.listdir(tmp_path / "runs")) == ["x"]


def test_other_data_under_the_same_root_is_refused(root, tmp_path, capsys):
    """The record holds each data set's fingerprint (the CIFAR release's training images): the same --out and
    --root holding other images stop with exit 2, so a seed added later never joins runs of other data."""
    out = tmp_path / "out"
    argv = ["cifar10-lt", "--root", root, "--out", str(out), "--rows", "cifar10-if100", "--dry_run"]
    manifest = reproduce.check_out_folder(str(out), reproduce.get_args_parser().parse_args(argv), [1],
                                          reproduce.chosen_rows(reproduce.TABLES["cifar10-lt"], "cifar10-if100"))
    assert set(manifest["data"]) == {"cifar10"}
    out.mkdir()
    (out / reproduce.MANIFEST).write_text(json.dumps({**manifest, "data": {"cifar10": "0" * 40}}))
    with pytest.raises(SystemExit) as exited:
        reproduce.cli(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "holds runs trained on other cifar10 data" in err and "000000000000" in err


def test_results_never_average_runs_of_other_data(tmp_path):
    from tests.test_results_tool import make_run, table
    for name, seed, data in (("a", 1, "x" * 40), ("b", 2, "x" * 40), ("c", 3, "y" * 40)):
        folder = make_run(tmp_path, name, seed, [10.0 * seed])
        meta = json.loads((folder / "args.json").read_text())
        (folder / "args.json").write_text(json.dumps({**meta, "data_fingerprint": data}))
    assert sorted(r["seeds"] for r in table(tmp_path)) == ["1,2", "3"]
