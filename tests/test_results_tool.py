import csv
import json
import statistics

from scripts.results import main as results_main

BASE_ARGS = {"dataset": "cifar10", "imbanlance_rate": 0.01, "arch": "resnet32", "width": 16, "epochs": 3,
             "lr": 0.01, "method": "glmc", "root_log": "x", "workers": 2}


def make_run(root, name, seed, top1s, variant="glmc", many=(50.0,), **changes):
    folder = root / name
    folder.mkdir(parents=True)
    args = {**BASE_ARGS, "seed": seed, "root_log": str(root), **changes}
    (folder / "args.json").write_text(json.dumps({"args": args, "variant": variant}))
    lines = [json.dumps({"epoch": i + 1, "top1": t, "many": many[-1], "medium": 40.0, "few": None})
             for i, t in enumerate(top1s)]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_seeds_aggregate_into_one_row(tmp_path, capsys):
    make_run(tmp_path, "a", 1, [10.0, 30.0, 20.0])
    make_run(tmp_path, "b", 2, [15.0, 25.0, 24.0], workers=0)  # workers do not split a configuration
    make_run(tmp_path, "c", 1, [5.0, 6.0, 7.0], variant="ce", method="ce")
    assert results_main([str(tmp_path), "--csv", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert len(rows) == 2
    glmc = next(r for r in rows if r["method"] == "glmc")
    assert glmc["seeds"] == "1,2"
    assert glmc["top-1 best"] == f"{statistics.mean([30, 25]):.2f} ± {statistics.stdev([30, 25]):.2f}"
    assert glmc["top-1 last"] == f"{statistics.mean([20, 24]):.2f} ± {statistics.stdev([20, 24]):.2f}"
    assert glmc["few"] == "empty" and glmc["many"] == "50.00" and glmc["runs complete"] == "2/2"
    ce = next(r for r in rows if r["method"] == "ce")
    assert ce["top-1 best"] == "7.00" and ce["top-1 last"] == "7.00"
    assert "| cifar10 | 100 | resnet32 (width 16) | glmc |" in out


def test_test_py_reports_in_run_folders_are_averaged(tmp_path, capsys):
    make_run(tmp_path, "a", 1, [10.0, 20.0, 30.0])
    make_run(tmp_path, "b", 2, [10.0, 20.0, 30.0])
    (tmp_path / "a" / "maxnorm.json").write_text(json.dumps({"top1": 40.0, "per_class": []}))
    (tmp_path / "b" / "maxnorm.json").write_text(json.dumps({"top1": 44.0, "per_class": []}))
    results_main([str(tmp_path), "--csv", str(tmp_path / "t.csv")])
    (row,) = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert row["test.py top-1"] == f"42.00 ± {statistics.stdev([40, 44]):.2f}"


def test_incomplete_run_is_flagged(tmp_path, capsys):
    make_run(tmp_path, "a", 1, [10.0, 12.0])
    results_main([str(tmp_path)])
    assert "0/1" in capsys.readouterr().out


def test_no_runs_is_an_error(tmp_path, capsys):
    assert results_main([str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err
