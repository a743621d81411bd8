"""Summarise run folders as a markdown table (and CSV): one row per configuration, seeds aggregated.

    python scripts/results.py runs/ [more folders ...] [--csv results.csv]

Reads each run folder's args.json and metrics.jsonl (and test.py JSON reports
saved in the folder, when present). Runs that differ only in the seed share a
row; top-1 best and last are given as mean ± sample standard deviation over
seeds; many/medium/few are the last epoch's, averaged over seeds.
"""
import argparse
import csv
import json
import os
import statistics
import sys
from collections import OrderedDict
from typing import Dict, List, Optional

# Settings that do not change what a run computes (or vary per run by design).
NOT_CONFIG = {"seed", "seeds", "root", "root_log", "root_model", "resume", "gpu", "workers", "print_freq",
              "dry_run", "debug", "no_download", "no_tensorboard", "start_epoch"}
COLUMNS = ["data set", "IF", "arch", "method", "epochs", "seeds", "top-1 best", "top-1 last",
           "many", "medium", "few", "test.py top-1", "runs complete"]


def find_runs(paths: List[str]) -> List[str]:
    runs = []
    for path in paths:
        for folder, _, files in os.walk(path):
            if "args.json" in files and "metrics.jsonl" in files:
                runs.append(folder)
    return sorted(runs)


def read_run(folder: str) -> Dict:
    with open(os.path.join(folder, "args.json")) as f:
        meta = json.load(f)
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    reports = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json") and name != "args.json":
            with open(os.path.join(folder, name)) as f:
                report = json.load(f)
            if isinstance(report, dict) and "top1" in report:
                reports.append(report)
    return {"folder": folder, "meta": meta, "records": records, "reports": reports}


def config_key(args: Dict) -> str:
    return json.dumps({k: v for k, v in sorted(args.items()) if k not in NOT_CONFIG}, sort_keys=True)


def mean_std(values: List[float]) -> Optional[str]:
    if not values:
        return None
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def mean_or_empty(values: List[Optional[float]]) -> str:
    present = [v for v in values if v is not None]
    return f"{statistics.mean(present):.2f}" if present else "empty"


def summarise(runs: List[Dict]) -> List[Dict[str, str]]:
    groups: "OrderedDict[str, List[Dict]]" = OrderedDict()
    for run in runs:
        if run["records"]:
            groups.setdefault(config_key(run["meta"]["args"]), []).append(run)
    rows = []
    for members in groups.values():
        args = members[0]["meta"]["args"]
        lasts = [m["records"][-1] for m in members]
        complete = sum(r["epoch"] == args["epochs"] for r in lasts)
        arch = args["arch"] + (f" (width {args['width']})" if args["arch"] == "resnet32" else "")
        rows.append({
            "data set": args["dataset"], "IF": f"{1 / args['imbanlance_rate']:g}", "arch": arch,
            "method": members[0]["meta"].get("variant", "glmc"), "epochs": str(args["epochs"]),
            "seeds": ",".join(str(m["meta"]["args"]["seed"]) for m in members),
            "top-1 best": mean_std([max(r["top1"] for r in m["records"]) for m in members]),
            "top-1 last": mean_std([r["top1"] for r in lasts]),
            "many": mean_or_empty([r["many"] for r in lasts]), "medium": mean_or_empty([r["medium"] for r in lasts]),
            "few": mean_or_empty([r["few"] for r in lasts]),
            "test.py top-1": mean_std([rep["top1"] for m in members for rep in m["reports"]]) or "",
            "runs complete": f"{complete}/{len(members)}",
        })
    return rows


def markdown(rows: List[Dict[str, str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row[c] for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="run folders or folders holding them")
    parser.add_argument("--csv", default=None, help="also write the table as CSV to this path")
    args = parser.parse_args(argv)
    runs = [read_run(folder) for folder in find_runs(args.paths)]
    if not runs:
        print(f"error: no run folders (args.json + metrics.jsonl) under {', '.join(args.paths)}", file=sys.stderr)
        return 2
    rows = summarise(runs)
    print(markdown(rows))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
