"""scripts/reproduce.py on tiny synthetic data: the table's rows, seeds and differences, an interrupted sweep
continued to the same weights, bad input, and a failing run."""
import csv
import glob
import json
import os
import re
import signal
import statistics
import subprocess
import sys

import pytest
import torch

from scripts import reproduce
from tests.conftest import ROOT, write_cifar

pytestmark = pytest.mark.slow

ROWS = "cifar10-if100,cifar10-if10"
EXTRA = "--epochs 2 --width 8 -j 0 --no_download"


def command(root, out, rows=ROWS, *more):
    return [sys.executable, os.path.join(ROOT, "scripts", "reproduce.py"), "cifar10-lt", "--seeds", "2", "--root", root,
            "--extra", EXTRA, "--maxnorm_extra", "--epochs 2 -j 0", "--rows", rows, "--per_gpu", "2",
            "--progress_every", "0.5", "--out", str(out), *more]


def sweep(root, out, rows=ROWS):
    done = subprocess.run(command(root, out, rows), capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("reproduce") / "data")
    write_cifar(root, train_per_class=100, test_per_class=3)
    return root


@pytest.fixture(scope="module")
def whole(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    code, stdout, stderr = sweep(tiny_root, out)
    assert code == 0, stderr
    return out, stdout


def weights(out):
    return {os.path.basename(os.path.dirname(p)): torch.load(p, weights_only=False)["state_dict"]
            for p in glob.glob(os.path.join(str(out), "runs", "*", "ckpt.pth.tar"))}


def test_table_rows_seeds_and_differences_to_the_published_values(whole):
    out, stdout = whole
    rows = list(csv.DictReader(open(out / "table.csv")))
    columns = ["glmc", "updated", "maxnorm", "glmc-maxnorm"]
    assert [(r["row"], r["column"]) for r in rows] == [(row, c) for row in ("CIFAR-10-LT, IF 100", "CIFAR-10-LT, IF 10")
                                                       for c in columns]
    # the paper, the README's update, its + MaxNorm, and the README's GLMC + MaxNorm on the paper's split
    published = {"CIFAR-10-LT, IF 100": (87.75, 88.49, 89.58, 87.57),
                 "CIFAR-10-LT, IF 10": (94.04, 94.85, 95.00, 94.03)}
    for r in rows:
        assert r["n"] == "2" and r["missing"] == ""
        assert float(r["published"]) == published[r["row"]][columns.index(r["column"])]
        name = {"CIFAR-10-LT, IF 100": "cifar10-if100", "CIFAR-10-LT, IF 10": "cifar10-if10"}[r["row"]]
        if r["column"].endswith("maxnorm"):  # the stage on the updated (maxnorm) or the glmc runs
            base = "updated" if r["column"] == "maxnorm" else "glmc"
            bests = [json.load(open(out / "runs" / f"{name}-{base}-s{s}" / "eval"
                                    / "maxnorm-best-epochs2-best.json"))["top1"] for s in (1, 2)]
        else:
            bests = [max(json.loads(line)["top1"] for line in open(out / "runs" / f"{name}-{r['column']}-s{s}"
                                                                   / "metrics.jsonl")) for s in (1, 2)]
        assert float(r["best_mean"]) == pytest.approx(statistics.mean(bests))
        assert float(r["best_std"]) == pytest.approx(statistics.stdev(bests))
        assert float(r["diff"]) == pytest.approx(statistics.mean(bests) - float(r["published"]))
        # 95 % interval of the difference, by hand: t(0.975, 1 degree of freedom) = 12.7062, std / sqrt(2)
        half = 12.7062 * statistics.stdev(bests) / 2 ** 0.5
        assert float(r["diff_low"]) == pytest.approx(statistics.mean(bests) - half - float(r["published"]))
        assert float(r["diff_high"]) == pytest.approx(statistics.mean(bests) + half - float(r["published"]))
        assert r["published_inside"] == str(int(abs(statistics.mean(bests) - float(r["published"])) <= half))
    assert len(glob.glob(str(out / "runs" / "*"))) == 8  # 2 rows x 2 training columns x 2 seeds: nothing twice
    assert "--seed 2" in (out / "logs" / "cifar10-if10-glmc-maxnorm-s2.log").read_text().splitlines()[0]
    assert "chosen on the test set" in (out / "table.md").read_text()
    # the runs' own network (from their folders) in the title and the banner, beside the published one
    network = "CIFAR-10-LT, runs with ResNet-32 width 8 (published: ResNet-32 (width 64, as released))"
    assert (out / "table.md").read_text().startswith(f"# {network}\n")
    assert stdout.startswith(f"{network} — main.py flags added: {EXTRA}: 16 runs")
    # progress lines name each running run's epoch, step and images per second
    assert re.search(r"running \(cifar10-\S+ epoch \d/2 step \d+/\d+, \d+ img/s", stdout), stdout
    try:  # matplotlib is optional: without it the table is still written, and the figure's absence is said
        import matplotlib  # noqa: F401
    except ImportError:
        assert not (out / "table.png").exists() and "matplotlib is not installed" in stdout
    else:
        assert (out / "table.png").read_bytes()[:4] == b"\x89PNG"


def test_an_interrupted_sweep_continues_to_the_same_weights_and_table(whole, tiny_root, tmp_path):
    out = tmp_path / "stopped"
    proc = subprocess.Popen(command(tiny_root, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    for line in proc.stdout:
        if " 2/16 done" in line:  # two runs finished, two more under way
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Continue with:" in err and "reproduce.py cifar10-lt" in err
    code, stdout, stderr = sweep(tiny_root, out)
    assert code == 0, stderr
    assert "already done" in stdout
    reference, continued = weights(whole[0]), weights(out)
    assert sorted(reference) == sorted(continued)
    for name in reference:
        assert all(torch.equal(reference[name][k], continued[name][k]) for k in reference[name]), name
    strip = lambda text: [line.rsplit("|", 3)[0] for line in text.splitlines()]  # minutes per run differ
    assert strip((out / "table.md").read_text()) == strip((whole[0] / "table.md").read_text())


def test_a_failing_run_is_reported_and_the_others_finish(tiny_root, tmp_path):
    out = tmp_path / "failing"
    broken = out / "runs" / "cifar10-if100-updated-s2"
    broken.mkdir(parents=True)
    (broken / "ckpt.pth.tar").write_bytes(b"not a checkpoint")
    code, stdout, stderr = sweep(tiny_root, out, rows="cifar10-if100")
    assert code == 1
    assert "cifar10-if100-updated-s2 failed (exit 2)" in stdout and "is not a PyTorch checkpoint" in stdout
    rows = {r["column"]: r for r in csv.DictReader(open(out / "table.csv"))}
    assert rows["glmc"]["n"] == "2" and rows["updated"]["n"] == "1" and rows["maxnorm"]["n"] == "1"
    assert "s2 (failed)" in rows["updated"]["missing"] and "s2 (skipped)" in rows["maxnorm"]["missing"]


@pytest.mark.parametrize("argv, message", [
    (["cifar1000-lt"], "unknown table 'cifar1000-lt'; the tables: cifar10-lt, cifar100-lt"),
    (["cifar10-lt", "--gpus", "7"], "--gpus 7: this machine has"),
    (["cifar10-lt", "--rows", "cifar10-if7"], "--rows: cifar10-if7 not in cifar10-lt"),
    (["cifar10-lt", "--seeds", "0"], "--seeds 0 must be 1 or more"),
])
def test_bad_input_stops_with_exit_2(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        reproduce.cli(argv + ["--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_bad_extra_flag_stops_before_any_run_starts(tiny_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        reproduce.cli(["cifar10-lt", "--root", tiny_root, "--extra", "--epochs 2 --no_download --nope 1",
                       "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err
    assert "the first run (cifar10-if100-glmc-s1) does not start; nothing was started" in err
    assert "unrecognized arguments: --nope 1" in err
    assert not (tmp_path / "out").exists()


def test_a_folder_of_another_table_stops_with_exit_2(whole, capsys):
    with pytest.raises(SystemExit) as exc:
        reproduce.cli(["cifar100-lt", "--out", str(whole[0])])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "holds a sweep made with table 'cifar10-lt', not 'cifar100-lt'" in err


def test_the_released_models_table_evaluates_downloaded_checkpoints_beside_the_published_figures(tiny_root, tmp_path,
                                                                                                   capsys):
    """Checkpoints in the released layout (DataParallel's `module.` names, epoch and best_acc1 only): one named
    after its row, one given as ROW=FILE; a row without a file is listed with its link; a model whose data is
    missing stops everything before anything is evaluated."""
    from models import build_model
    folder = tmp_path / "downloads"
    folder.mkdir()
    for name, seed in (("cifar10-if100.pth.tar", 0), ("mine.pth", 1)):
        torch.manual_seed(seed)
        state = {"module." + k: v for k, v in build_model("resnet32", 10, 64).state_dict().items()}
        torch.save({"epoch": 200, "state_dict": state, "best_acc1": 88.0}, folder / name)
    out = tmp_path / "out"
    argv = ["released", "--checkpoints", str(folder), "--root", tiny_root, "--out", str(out),
            "--rows", "cifar10-if100,cifar10-if10,imagenet-lt-glmc", f"cifar10-if10={folder / 'mine.pth'}"]
    with pytest.raises(SystemExit) as exited:
        reproduce.cli(argv)
    printed = capsys.readouterr().out
    assert exited.value.code == 0, printed
    assert "imagenet-lt-glmc: not found; download it from https://drive.google.com/file/d/1om0ZRuC0PYrYHA1mAsdxm31RYQ" \
           in printed
    table = (out / "released.md").read_text()
    for row, published, name in (("CIFAR-10-LT, IF 100", 88.49, "cifar10-if100"), ("CIFAR-10-LT, IF 10", 94.85,
                                                                                     "cifar10-if10")):
        top1 = json.load(open(out / f"{name}.json"))["top1"]
        line = next(line for line in table.splitlines() if line.startswith(f"| {row}, GLMC updated |"))
        assert f"| {published:.2f} | {top1:.2f} | {top1 - published:+.2f} |" in line
    assert "| ImageNet-LT, GLMC | — | 56.30 | — | not found | — / — / — (70.10 / 52.40 / 30.40) |" in table
    with pytest.raises(SystemExit) as exited:  # no CIFAR-10 under this root: nothing is evaluated
        reproduce.cli(["released", "--checkpoints", str(folder), "--root", str(tmp_path / "empty"), "--out",
                       str(tmp_path / "out2"), "--rows", "cifar10-if100"])
    assert exited.value.code == 2 and "the data of these models is missing" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()
