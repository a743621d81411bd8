"""Summarise run folders as a markdown table (and CSV): one row per configuration, seeds aggregated.

    python scripts/results.py runs/ [more folders ...] [--csv results.csv]

Reads each run folder's args.json and metrics.jsonl, and the evaluation reports
in its eval/ folder (written there by test.py and the MaxNorm stage). Runs that
differ only in the training seed share a row (and only those: a --data_seed that
was given is part of the configuration, a data seed that follows the seed is not).
A row counts distinct seeds: folders that repeat a seed of the same configuration
(a copied folder, or the same run started twice) count once, the newest (by its
last metrics.jsonl write) standing for that seed, and the repeats are listed in
their own column. Each kind of evaluation has its own column: the training-time
evaluation of every epoch (best and last), test.py per checkpoint, head and
post-hoc method, and the MaxNorm stage. A cell is the mean ± sample standard
deviation over the seeds that have it, with their number n. IF is 1 /
--imbanlance_rate for CIFAR and the training set's largest over smallest class
count for list and folder data.
"""
import argparse
import csv
import json
import os
import statistics
import sys
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.runs import read_metrics  # noqa: E402

# Settings that do not change what a run computes (or vary per run by design).
NOT_CONFIG = {"seed", "seeds", "root", "root_log", "root_model", "resume", "gpu", "workers", "print_freq",
              "dry_run", "debug", "no_download", "no_tensorboard", "start_epoch", "name", "given_flags",
              "dir_train_txt", "dir_test_txt", "channels_last", "compile"}
FIXED_COLUMNS = ["data set", "IF", "arch", "method", "epochs", "seeds", "data seed", "top-1 best", "top-1 last",
                 "many", "medium", "few"]
LAST_COLUMNS = ["runs complete", "repeated seeds"]


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def find_runs(paths: List[str]) -> List[str]:
    runs = []
    for path in paths:
        for folder, _, files in os.walk(path):
            if "args.json" in files and "metrics.jsonl" in files:
                runs.append(folder)
    return sorted(runs)


def report_column(report: Dict) -> Optional[str]:
    """The column of an evaluation report, e.g. 'test.py fc_cb (best)' or 'MaxNorm stage best epoch (best)'."""
    kind = report.get("kind")
    if kind not in ("test.py", "maxnorm stage") or "top1" not in report:
        return None
    name = "test.py" if kind == "test.py" else "MaxNorm stage"
    return f"{name} {report.get('evaluation', '')} ({report.get('checkpoint_label', '?')})".replace("  ", " ")


def read_reports(folder: str) -> Dict[str, float]:
    """{column: top-1} of the run's evaluation reports."""
    out = {}
    eval_dir = os.path.join(folder, "eval")
    if not os.path.isdir(eval_dir):
        return out
    for name in sorted(os.listdir(eval_dir)):
        if not name.endswith(".json"):
            continue
        path = os.path.join(eval_dir, name)
        try:
            with open(path) as f:
                report = json.load(f)
        except (OSError, ValueError):
            warn(f"{path}: not a readable JSON report; skipped")
            continue
        column = report_column(report) if isinstance(report, dict) else None
        if column:
            out[column] = report["top1"]
    return out


def read_run(folder: str) -> Optional[Dict]:
    path = os.path.join(folder, "args.json")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        warn(f"{path}: not readable JSON; run folder skipped")
        return None
    metrics = os.path.join(folder, "metrics.jsonl")
    return {"folder": folder, "meta": meta, "records": read_metrics(metrics, warn), "reports": read_reports(folder),
            "written": os.path.getmtime(metrics)}


def data_seed_of(meta: Dict) -> Optional[int]:
    """The fixed data seed, or None when it follows the training seed (the released behaviour).

    Fixed means --data_seed was given, as the run records it (`flag_sources`, or the given flags); a run
    folder that records neither counts a data seed equal to the seed as following it.
    """
    args = meta["args"]
    seed = args.get("data_seed")
    sources, given = meta.get("flag_sources"), args.get("given_flags")
    if sources:
        return seed if sources.get("data_seed") == "given" else None
    if given is not None:
        return seed if "data_seed" in given else None
    return None if seed is None or seed == args.get("seed") else seed


def config_key(meta: Dict) -> str:
    config = {k: v for k, v in meta["args"].items() if k not in NOT_CONFIG and k != "data_seed"}
    config["data_seed"] = data_seed_of(meta)
    return json.dumps(config, sort_keys=True, default=str)


def imbalance_factor(meta: Dict) -> str:
    args = meta["args"]
    counts = [n for n in meta.get("train_counts") or () if n > 0]
    if args.get("dataset") in ("cifar10", "cifar100") or not counts:
        return f"{1 / args['imbanlance_rate']:g}" if args.get("imbanlance_rate") else "?"
    return f"{max(counts) / min(counts):.4g}"


def one_run_per_seed(members: List[Dict]) -> Tuple[List[Dict], str]:
    """The runs of one configuration with distinct seeds (the newest run of a repeated seed), and the
    repeats as text, e.g. '3407 (2 runs)'."""
    by_seed: "OrderedDict[int, List[Dict]]" = OrderedDict()
    for run in members:
        by_seed.setdefault(run["meta"]["args"]["seed"], []).append(run)
    kept = [max(runs, key=lambda r: r["written"]) for runs in by_seed.values()]
    repeats = ", ".join(f"{seed} ({len(runs)} runs)" for seed, runs in by_seed.items() if len(runs) > 1)
    return kept, repeats


def cell(values: List[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.2f} (n=1)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (n={len(values)})"


def mean_or_empty(values: List[Optional[float]]) -> str:
    present = [v for v in values if v is not None]
    return f"{statistics.mean(present):.2f}" if present else "empty"


def summarise(runs: List[Dict]) -> List[Dict[str, str]]:
    groups: "OrderedDict[str, List[Dict]]" = OrderedDict()
    for run in runs:
        if run["records"]:
            groups.setdefault(config_key(run["meta"]), []).append(run)
    rows = []
    for group in groups.values():
        members, repeats = one_run_per_seed(group)
        args = members[0]["meta"]["args"]
        lasts = [m["records"][-1] for m in members]
        complete = sum(r["epoch"] == args["epochs"] for r in lasts)
        arch = args["arch"] + (f" (width {args['width']})" if args["arch"] == "resnet32" else "")
        row = {
            "data set": args["dataset"], "IF": imbalance_factor(members[0]["meta"]), "arch": arch,
            "method": members[0]["meta"].get("variant", "glmc"), "epochs": str(args["epochs"]),
            "seeds": ",".join(str(m["meta"]["args"]["seed"]) for m in members),
            "data seed": "= seed" if data_seed_of(members[0]["meta"]) is None else str(data_seed_of(members[0]["meta"])),
            "top-1 best": cell([max(r["top1"] for r in m["records"]) for m in members]),
            "top-1 last": cell([r["top1"] for r in lasts]),
            "many": mean_or_empty([r["many"] for r in lasts]), "medium": mean_or_empty([r["medium"] for r in lasts]),
            "few": mean_or_empty([r["few"] for r in lasts]),
        }
        for column in sorted({c for m in members for c in m["reports"]}):
            row[column] = cell([m["reports"][column] for m in members if column in m["reports"]])
        row["runs complete"] = f"{complete}/{len(members)}"
        row["repeated seeds"] = repeats
        rows.append(row)
    return rows


def columns_of(rows: List[Dict[str, str]]) -> List[str]:
    extra = sorted({c for row in rows for c in row} - set(FIXED_COLUMNS) - set(LAST_COLUMNS))
    return FIXED_COLUMNS + extra + LAST_COLUMNS


def markdown(rows: List[Dict[str, str]], columns: List[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row.get(c, "") for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="run folders or folders holding them")
    parser.add_argument("--csv", default=None, help="also write the table as CSV to this path")
    args = parser.parse_args(argv)
    runs = [run for run in (read_run(folder) for folder in find_runs(args.paths)) if run]
    if not runs:
        print(f"error: no run folders (args.json + metrics.jsonl) under {', '.join(args.paths)}", file=sys.stderr)
        return 2
    rows = summarise(runs)
    columns = columns_of(rows)
    print(markdown(rows, columns))
    print("top-1 best/last: the evaluation during training (the run's head, fc_cb for GLMC), as released; "
          "many/medium/few: last epoch. Cells: mean ± standard deviation over distinct seeds (n seeds); a seed run "
          "more than once counts once (its newest run), the repeats listed under 'repeated seeds'.")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
