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
evaluation of every epoch (its best epoch, chosen on the test set as released, and
its last), test.py per checkpoint, head and post-hoc method, and the MaxNorm stage.
A cell is the mean ± sample standard deviation over the seeds that have it, with
their number n; the CSV holds each as three numeric columns (mean, std, n). IF is
1 / --imbanlance_rate for CIFAR and the training set's largest over smallest class
count for list and folder data. List and folder data sets are told apart by their
training set (its fingerprint), and named by their folder.
"""
import csv
import json
import os
import statistics
import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Union

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.config import Parser  # noqa: E402
from utils.errors import WriteFailed, writing  # noqa: E402
from utils.metrics_log import read_metrics  # noqa: E402
from utils.runs import run_head  # noqa: E402
from utils.safe_files import link_note  # noqa: E402

# Settings that do not change what a run computes (or vary per run by design).
NOT_CONFIG = {"seed", "seeds", "root", "root_log", "root_model", "resume", "gpu", "workers", "print_freq",
              "dry_run", "debug", "no_download", "no_tensorboard", "start_epoch", "name", "given_flags",
              "dir_train_txt", "dir_test_txt", "channels_last", "compile", "threads", "trust_checkpoint",
              "no_memory_check"}
BEST, LAST = "top-1 best epoch (chosen on test)", "top-1 last epoch"
GROUPS = ("many", "medium", "few")
FIXED_COLUMNS = ["data set", "IF", "arch", "method", "split", "epochs", "seeds", "data seed", "head", BEST, LAST,
                 *(f"{g} (last epoch)" for g in GROUPS)]
CIFAR = ("cifar10", "cifar100")
LAST_COLUMNS = ["runs complete", "repeated seeds"]


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def find_runs(paths: List[str]) -> List[str]:
    """Run folders (args.json + metrics.jsonl); a folder with args.json only is named in a warning."""
    runs = []
    for path in paths:
        for folder, _, files in os.walk(path):
            if "args.json" in files and "metrics.jsonl" in files:
                runs.append(folder)
            elif "args.json" in files:
                warn(f"{folder}: no finished epoch (no metrics.jsonl), or a dry run of an older version; skipped")
    return sorted(runs)


def report_column(report: Dict) -> Optional[str]:
    """The column of an evaluation report, e.g. 'test.py fc_cb, best checkpoint' or 'MaxNorm stage, best stage
    epoch (chosen on test), best checkpoint'."""
    kind = report.get("kind")
    if kind not in ("test.py", "maxnorm stage") or "top1" not in report:
        return None
    evaluation = report.get("evaluation", "")
    if kind == "maxnorm stage":
        evaluation = evaluation.replace("best epoch", "best stage epoch (chosen on test)").replace(
            "last epoch", "last stage epoch")
    name = "test.py" if kind == "test.py" else "MaxNorm stage,"
    return f"{name} {evaluation}, {report.get('checkpoint_label', '?')} checkpoint".replace("  ", " ")


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
        note_link_out(folder, path)
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


def note_link_out(folder: str, path: str) -> None:
    """Say so when a file read as part of run folder `folder` is a link leading out of it."""
    note = link_note(folder, path)
    if note:
        print(note, file=sys.stderr)


def read_run(folder: str) -> Optional[Dict]:
    path = os.path.join(folder, "args.json")
    metrics = os.path.join(folder, "metrics.jsonl")
    for read in (path, metrics):
        note_link_out(folder, read)
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        warn(f"{path}: not readable JSON; run folder skipped")
        return None
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
    if meta["args"].get("dataset") not in CIFAR:  # the images themselves: another folder is another data set
        config["training set"] = meta.get("train_fingerprint") or meta["args"].get("root")
    elif meta.get("data_fingerprint"):  # the release the seeds draw from: another copy is other data
        config["training data"] = meta["data_fingerprint"]
    return json.dumps(config, sort_keys=True, default=str)


def data_set_name(meta: Dict) -> str:
    """The data set, with the folder of list and folder data ('folder (nepes)')."""
    args = meta["args"]
    root = meta.get("data_root") or args.get("root")
    if args.get("dataset") in CIFAR or not root:
        return args.get("dataset", "?")
    return f"{args['dataset']} ({os.path.basename(os.path.normpath(root))})"


def imbalance_factor(meta: Dict) -> str:
    args = meta["args"]
    counts = [n for n in meta.get("train_counts") or () if n > 0]
    if args.get("dataset") in ("cifar10", "cifar100") or not counts:
        return f"{1 / args['imbanlance_rate']:g}" if args.get("imbanlance_rate") else "?"
    return f"{max(counts) / min(counts):.4g}"


def epochs_done(run: Dict) -> int:
    return max((r["epoch"] for r in run["records"]), default=0)


def one_run_per_seed(members: List[Dict]) -> Tuple[List[Dict], str]:
    """The runs of one configuration with distinct seeds, and the repeats as text, e.g. '3407 (2 runs, 1
    unfinished)'. A repeated seed counts its finished run: the one with the most epochs done, the newest
    among those; an unfinished repeat is listed, never chosen over a finished run."""
    by_seed: "OrderedDict[int, List[Dict]]" = OrderedDict()
    for run in members:
        by_seed.setdefault(run["meta"]["args"]["seed"], []).append(run)
    kept = [max(runs, key=lambda r: (epochs_done(r), r["written"])) for runs in by_seed.values()]
    repeats = []
    for seed, runs in by_seed.items():
        if len(runs) > 1:
            unfinished = sum(epochs_done(r) < r["meta"]["args"]["epochs"] for r in runs)
            repeats.append(f"{seed} ({len(runs)} runs" + (f", {unfinished} unfinished)" if unfinished else ")"))
    return kept, ", ".join(repeats)


@dataclass
class Stat:
    """A figure over seeds: shown as 'mean ± std (n=N)', written to CSV as three numbers."""
    values: List[float]

    def __str__(self) -> str:
        if not self.values:
            return ""
        if len(self.values) == 1:
            return f"{self.values[0]:.2f} (n=1)"
        return f"{statistics.mean(self.values):.2f} ± {statistics.stdev(self.values):.2f} (n={len(self.values)})"

    def fields(self, column: str) -> Dict[str, str]:
        mean = f"{statistics.mean(self.values):.10g}" if self.values else ""
        std = f"{statistics.stdev(self.values):.10g}" if len(self.values) > 1 else ""
        return {f"{column} mean": mean, f"{column} std": std, f"{column} n": str(len(self.values))}


@dataclass
class GroupMean:
    """A shot group's accuracy, the mean over seeds; 'empty' where the test set has no class in the group,
    an empty cell in the CSV (so that the column loads as numbers)."""
    values: List[Optional[float]]

    def mean(self) -> Optional[float]:
        present = [v for v in self.values if v is not None]
        return statistics.mean(present) if present else None

    def __str__(self) -> str:
        return "empty" if self.mean() is None else f"{self.mean():.2f}"

    def fields(self, column: str) -> Dict[str, str]:
        return {column: "" if self.mean() is None else f"{self.mean():.10g}"}


Row = Dict[str, Union[str, Stat, GroupMean]]


def summarise(runs: List[Dict]) -> List[Row]:
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
        row: Row = {
            "data set": data_set_name(members[0]["meta"]), "IF": imbalance_factor(members[0]["meta"]), "arch": arch,
            "method": members[0]["meta"].get("variant", "glmc"),
            "split": args.get("split", "") if args.get("dataset") in CIFAR else "",
            "epochs": str(args["epochs"]),
            "seeds": ",".join(str(m["meta"]["args"]["seed"]) for m in members),
            "data seed": "= seed" if data_seed_of(members[0]["meta"]) is None
            else str(data_seed_of(members[0]["meta"])),
            "head": ", ".join(sorted({run_head(m["meta"])[0] for m in members})),
            BEST: Stat([max(r["top1"] for r in m["records"]) for m in members]),
            LAST: Stat([r["top1"] for r in lasts]),
            **{f"{g} (last epoch)": GroupMean([r[g] for r in lasts]) for g in GROUPS},
        }
        for column in sorted({c for m in members for c in m["reports"]}):
            row[column] = Stat([m["reports"][column] for m in members if column in m["reports"]])
        row["runs complete"] = f"{complete}/{len(members)}"
        row["repeated seeds"] = repeats
        rows.append(row)
    return rows


def columns_of(rows: List[Row]) -> List[str]:
    """The columns: the split only where the rows differ by split (CIFAR-LT's subset draw)."""
    extra = sorted({c for row in rows for c in row} - set(FIXED_COLUMNS) - set(LAST_COLUMNS))
    splits = {row["split"] for row in rows}
    fixed = [c for c in FIXED_COLUMNS if c != "split" or len(splits) > 1]
    return fixed + extra + LAST_COLUMNS


def markdown(rows: List[Row], columns: List[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def csv_rows(rows: List[Row], columns: List[str]) -> Tuple[List[str], List[Dict[str, str]]]:
    """(header, rows) of the CSV: a figure over seeds becomes its mean, std and n columns; numbers only, an
    empty cell where there is none."""
    stats = {c for row in rows for c, v in row.items() if isinstance(v, Stat)}
    header = [name for c in columns for name in (Stat([]).fields(c) if c in stats else [c])]
    out = []
    for row in rows:
        flat: Dict[str, str] = {}
        for c in columns:
            value = row.get(c, Stat([]) if c in stats else "")
            flat.update(value.fields(c) if isinstance(value, (Stat, GroupMean)) else {c: value})
        out.append(flat)
    return header, out


def main(argv=None) -> int:
    parser = Parser(description=__doc__.splitlines()[0])
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
    print("top-1: the evaluation during training, with the classifier in the 'head' column (each run's own, as it "
          "recorded it): its best epoch, chosen on the test "
          "set as the released code and the paper do, and its last epoch. Cells: mean ± standard deviation over "
          "distinct seeds (n seeds); a seed run more than once counts once (its newest run), the repeats listed "
          "under 'repeated seeds'.")
    if args.csv:
        header, flat = csv_rows(rows, columns)
        try:
            with writing(args.csv):
                with open(args.csv, "w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=header, restval="")
                    writer.writeheader()
                    writer.writerows(flat)
        except WriteFailed as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
        print(f"CSV written to {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
