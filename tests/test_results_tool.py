import csv
import json
import statistics

import pytest

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
    return folder


def add_report(folder, name, top1, kind="test.py", evaluation="fc_cb", label="best"):
    (folder / "eval").mkdir(exist_ok=True)
    (folder / "eval" / name).write_text(json.dumps({"kind": kind, "evaluation": evaluation, "checkpoint_label": label,
                                                    "top1": top1, "per_class": []}))


BEST, LAST = "top-1 best epoch (chosen on test)", "top-1 last epoch"


def table(tmp_path):
    results_main([str(tmp_path), "--csv", str(tmp_path / "t.csv")])
    return list(csv.DictReader(open(tmp_path / "t.csv")))


def stat(row, column):
    """(mean, std, n) of a figure over seeds, read as numbers from the CSV."""
    mean, std, n = (row[f"{column} {part}"] for part in ("mean", "std", "n"))
    return float(mean), (float(std) if std else None), int(n)


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
    assert stat(glmc, BEST) == (pytest.approx(27.5), pytest.approx(statistics.stdev([30, 25])), 2)
    assert stat(glmc, LAST) == (pytest.approx(22.0), pytest.approx(statistics.stdev([20, 24])), 2)
    assert glmc["few (last epoch)"] == "" and float(glmc["many (last epoch)"]) == 50.0  # no few-shot class
    assert "| 50.00 | 40.00 | empty |" in out
    assert glmc["runs complete"] == "2/2"
    ce = next(r for r in rows if r["method"] == "ce")
    assert stat(ce, BEST) == (7.0, None, 1) and stat(ce, LAST) == (7.0, None, 1)
    assert "| cifar10 | 100 | resnet32 (width 16) | glmc |" in out
    best, last = statistics.stdev([30, 25]), statistics.stdev([20, 24])
    assert f"| 27.50 ± {best:.2f} (n=2) | 22.00 ± {last:.2f} (n=2) |" in out
    header = out.splitlines()[0]
    assert header.count("best") == 1 and BEST in header and LAST in header


def test_each_kind_of_evaluation_has_its_own_column(tmp_path):
    a = make_run(tmp_path, "a", 1, [10.0, 20.0, 30.0])
    b = make_run(tmp_path, "b", 2, [10.0, 20.0, 30.0])
    add_report(a, "best-fc_cb.json", 10.0)
    add_report(a, "best-fc.json", 20.0, evaluation="fc")
    add_report(b, "best-fc_cb.json", 14.0)
    add_report(a, "maxnorm-best.json", 40.0, kind="maxnorm stage", evaluation="best epoch")
    (row,) = table(tmp_path)
    assert stat(row, "test.py fc_cb, best checkpoint") == (12.0, pytest.approx(statistics.stdev([10, 14])), 2)
    assert stat(row, "test.py fc, best checkpoint") == (20.0, None, 1)  # never averaged with fc_cb
    # not shown as a test.py figure; its two "best"s told apart
    assert stat(row, "MaxNorm stage, best stage epoch (chosen on test), best checkpoint") == (40.0, None, 1)


def test_a_fixed_data_seed_is_part_of_the_configuration(tmp_path):
    make_run(tmp_path, "a", 1, [10.0], data_seed=1)  # data seed follows the seed (released behaviour) ...
    make_run(tmp_path, "b", 2, [12.0], data_seed=2)  # ... so these two average as seeds
    make_run(tmp_path, "c", 1, [20.0], data_seed=0)  # a fixed data seed: another configuration ...
    make_run(tmp_path, "d", 2, [22.0], data_seed=0)  # ... shared by these two
    rows = table(tmp_path)
    assert sorted((r["data seed"], r["seeds"]) for r in rows) == [("0", "1,2"), ("= seed", "1,2")]


def test_a_torn_metrics_line_is_skipped_with_a_warning(tmp_path, capsys):
    folder = make_run(tmp_path, "a", 1, [10.0, 20.0])
    with open(folder / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "top1": 9')  # what a full disk can leave
    (row,) = table(tmp_path)
    assert stat(row, LAST) == (20.0, None, 1)
    err = capsys.readouterr().err
    assert "metrics.jsonl, line 3" in err and "skipped" in err


def test_incomplete_run_is_flagged(tmp_path, capsys):
    make_run(tmp_path, "a", 1, [10.0, 12.0])
    results_main([str(tmp_path)])
    assert "0/1" in capsys.readouterr().out


def test_no_runs_is_an_error(tmp_path, capsys):
    assert results_main([str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err


def test_a_copied_run_folder_counts_once(tmp_path):
    import os
    make_run(tmp_path, "a", 3407, [10.0, 10.5])
    copy = make_run(tmp_path, "a-copy", 3407, [10.0, 12.0])
    os.utime(copy / "metrics.jsonl", (2e9, 2e9))  # written last: the copy stands for seed 3407
    make_run(tmp_path, "b", 1, [20.0, 30.0])
    (row,) = table(tmp_path)
    assert row["seeds"] == "3407,1" and row["repeated seeds"] == "3407 (2 runs, 2 unfinished)"  # 2 of 3 epochs
    assert stat(row, LAST) == (21.0, pytest.approx(statistics.stdev([12, 30])), 2)


def test_a_given_data_seed_keeps_a_sweep_in_one_row(tmp_path):
    # main.py --seeds 1,2,3 --data_seed 1: the seed-1 run's data seed equals its seed, but was given
    for seed in (1, 2, 3):
        make_run(tmp_path, f"s{seed}", seed, [10.0 + seed], data_seed=1, given_flags=["data_seed", "seeds"])
    make_run(tmp_path, "other", 1, [50.0], data_seed=1, given_flags=[])  # data seed followed the seed
    rows = table(tmp_path)
    assert sorted((r["data seed"], r["seeds"]) for r in rows) == [("1", "1,2,3"), ("= seed", "1")]


def test_flag_sources_decide_whether_the_data_seed_was_given(tmp_path):
    folder = make_run(tmp_path, "a", 2, [10.0], data_seed=2)
    meta = json.loads((folder / "args.json").read_text())
    (folder / "args.json").write_text(json.dumps({**meta, "flag_sources": {"data_seed": "given", "seed": "given"}}))
    make_run(tmp_path, "b", 5, [10.0], data_seed=2)  # no record of given flags: fixed, as it differs from seed
    rows = table(tmp_path)
    assert [(r["data seed"], r["seeds"]) for r in rows] == [("2", "2,5")]


def test_imbalance_factor_of_list_data_from_the_class_counts(tmp_path):
    folder = make_run(tmp_path, "a", 1, [10.0], dataset="ImageNet-LT", imbanlance_rate=0.01)
    meta = json.loads((folder / "args.json").read_text())
    (folder / "args.json").write_text(json.dumps({**meta, "train_counts": [1280, 400, 20, 5]}))
    (row,) = table(tmp_path)
    assert row["IF"] == "256"


def test_two_folder_data_sets_with_the_same_flags_are_two_rows(tmp_path, capsys):
    for name, fingerprint, data_root in (("a", "f1", "/data/nepes"), ("b", "f2", "/data/wafers")):
        folder = make_run(tmp_path, name, 1, [10.0], dataset="folder")
        meta = json.loads((folder / "args.json").read_text())
        (folder / "args.json").write_text(json.dumps({**meta, "train_fingerprint": fingerprint,
                                                      "data_root": data_root}))
    rows = table(tmp_path)
    assert sorted(r["data set"] for r in rows) == ["folder (nepes)", "folder (wafers)"]


def test_a_folder_without_a_finished_epoch_is_named(tmp_path, capsys):
    make_run(tmp_path, "a", 1, [10.0])
    (tmp_path / "started").mkdir()
    (tmp_path / "started" / "args.json").write_text(json.dumps({"args": BASE_ARGS}))
    table(tmp_path)
    assert f"{tmp_path / 'started'}: no finished epoch" in capsys.readouterr().err


def test_runs_that_differ_by_split_show_it_and_each_row_names_its_evaluated_head(tmp_path, capsys):
    """A sweep folder holds the paper's split (replacement) and the released one: two rows that would look the
    same without a split column. The head comes from each run's record: fc_cb for GLMC, fc for a CE run and for
    a run recorded without one (the CE baseline trains fc only)."""
    make_run(tmp_path, "glmc", 1, [10.0], split="replacement")
    make_run(tmp_path, "updated", 1, [12.0], split="released")
    make_run(tmp_path, "ce", 1, [9.0], split="released", variant="ce", method="ce")
    for name, head in (("glmc", "fc_cb"), ("updated", "fc_cb")):
        meta = json.loads((tmp_path / name / "args.json").read_text())
        (tmp_path / name / "args.json").write_text(json.dumps({**meta, "eval_head": head}))
    rows = table(tmp_path)
    assert sorted((r["method"], r["split"], r["head"]) for r in rows) == [
        ("ce", "released", "fc"), ("glmc", "released", "fc_cb"), ("glmc", "replacement", "fc_cb")]
    assert "'head' column" in capsys.readouterr().out


def test_no_split_column_where_every_run_has_the_same_split(tmp_path):
    make_run(tmp_path, "a", 1, [10.0], split="released")
    make_run(tmp_path, "b", 2, [12.0], split="released")
    assert "split" not in table(tmp_path)[0]


def test_a_newer_unfinished_repeat_never_replaces_the_finished_run(tmp_path):
    """A finished 3-epoch run (best 19.50) and a newer run of the same configuration and seed stopped after
    epoch 1 (11.00): the seed's figure is the finished run's, and the repeat is listed as unfinished."""
    import os
    make_run(tmp_path, "finished", 3407, [11.0, 19.5, 18.0])
    newer = make_run(tmp_path, "stopped", 3407, [11.0])
    os.utime(newer / "metrics.jsonl", (2e9, 2e9))  # written last
    (row,) = table(tmp_path)
    assert stat(row, BEST) == (19.5, None, 1) and stat(row, LAST) == (18.0, None, 1)
    assert row["repeated seeds"] == "3407 (2 runs, 1 unfinished)" and row["runs complete"] == "1/1"
