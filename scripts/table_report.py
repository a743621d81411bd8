"""The reproduction table from the runs' folders: each cell's figures over its seeds beside the published values,
as Markdown, CSV and a figure (OUT/table.md, table.csv, table.png)."""
import csv
import io
import json
import os
import statistics
from typing import Dict, List, Optional, Tuple

from glmc.paper_tables import Cell, Row, Table, network_label
from scripts.results import read_run
from scripts.table_runs import last_flag, run_finished, stage_reports
from utils.figures import plot_reproduction
from utils.intervals import mean_interval
from utils.run_log import tidy_floats
from utils.runs import read_args_json
from utils.safe_files import write_text
from utils.sweep import DONE, Job

BEST_NOTE = ("top-1 best is the best test accuracy over epochs (chosen on the test set, as the released code and the "
             "published figures do); top-1 last is the last epoch's")


def mean_std(values: List[float]):
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def other_data(meta: Dict, data: Dict[str, str]) -> bool:
    """Whether a run (its args.json) was trained on other data than the sweep's: never averaged with its runs."""
    trained_on = meta.get("data_fingerprint")
    return bool(trained_on) and trained_on != data.get(meta["args"].get("dataset"), trained_on)


def cell_figures(row: Row, cell: Cell, seeds: List[int], out: str, args, seconds: Dict[str, float],
                 data: Dict[str, str]) -> Dict:
    """Figures of one cell over its seeds: best and last top-1, many/medium/few, minutes, per-epoch curves;
    a run trained on other data than the sweep's (`data`: fingerprint per data set) is left out."""
    best, last, groups, curves, minutes = [], [], {"many": [], "medium": [], "few": []}, {}, []
    done = 0
    for seed in seeds:
        name = f"{row.name}-{cell.column}-s{seed}"
        if cell.is_stage:
            base = os.path.join(out, "runs", f"{row.name}-{cell.flags}-s{seed}")
            paths = stage_reports(base, args.maxnorm_extra)
            if not all(os.path.isfile(p) for p in paths.values()) or other_data((read_run(base) or {})["meta"], data):
                continue
            reports = {w: json.load(open(p)) for w, p in paths.items()}
            best.append(reports["best"]["top1"])
            last.append(reports["last"]["top1"])
            final = reports["last"]
        else:
            run_dir = os.path.join(out, "runs", name)
            if not run_finished(run_dir):
                continue
            run = read_run(run_dir)
            if other_data(run["meta"], data):
                continue
            records = run["records"]
            best.append(max(r["top1"] for r in records))
            last.append(records[-1]["top1"])
            final = records[-1]
            curves[seed] = [r["top1"] for r in records]
        done += 1
        for g in groups:
            if final.get(g) is not None:
                groups[g].append(final[g])
        if name in seconds:
            minutes.append(seconds[name] / 60)
    return {"best": best, "last": last, "groups": groups, "curves": curves, "minutes": minutes, "done": done}


def fmt(value: Optional[float], spec: str = ".2f") -> str:
    return "" if value is None else format(value, spec)


def table_rows(table: Table, rows: List[Row], seeds: List[int], out: str, args, jobs: List[Job],
               seconds: Dict[str, float], data: Dict[str, str]) -> List[Dict]:
    state = {j.name: j.state for j in jobs}
    result = []
    for row in rows:
        for cell in row.cells:
            figures = cell_figures(row, cell, seeds, out, args, seconds, data)
            best_mean, best_std = mean_std(figures["best"])
            last_mean, last_std = mean_std(figures["last"])
            published = cell.published.get("top1")
            failed = [s for s in seeds if state.get(f"{row.name}-{cell.column}-s{s}") not in (DONE, None)]
            result.append({
                "row": row.label, "column": cell.column, "published": published,
                "published_groups": " / ".join(fmt(cell.published.get(g), "g") for g in ("many", "medium", "few"))
                if "many" in cell.published else "",
                "n": len(figures["best"]), "best_mean": best_mean, "best_std": best_std,
                "diff": None if published is None or best_mean is None else best_mean - published,
                **difference_interval(figures["best"], published),
                "last_mean": last_mean, "last_std": last_std,
                **{g: mean_std(v)[0] for g, v in figures["groups"].items()},
                "minutes_per_run": mean_std(figures["minutes"])[0],
                "missing": ", ".join(f"s{s} ({state.get(f'{row.name}-{cell.column}-s{s}')})" for s in failed),
                "curves": figures["curves"],
            })
    return result


def difference_interval(bests: List[float], published: Optional[float]) -> Dict:
    """The 95 % interval (Student's t over the seeds) of the best top-1's mean minus the published value, and
    whether the published value lies inside the interval of the mean; empty below two seeds."""
    interval = mean_interval(bests) if published is not None else None
    if interval is None:
        return {"diff_low": None, "diff_high": None, "published_inside": None}
    low, high = interval
    return {"diff_low": low - published, "diff_high": high - published, "published_inside": low <= published <= high}


def difference_text(r: Dict) -> str:
    """'-1.20 [-3.05, +0.65], inside' or '-77.75' (one seed) or '—'."""
    if r["diff"] is None:
        return "—"
    if r["diff_low"] is None:
        return f"{r['diff']:+.2f}"
    return (f"{r['diff']:+.2f} [{r['diff_low']:+.2f}, {r['diff_high']:+.2f}], "
            + ("inside" if r["published_inside"] else "outside"))


def run_network(job: Job) -> Optional[Tuple[str, Optional[int]]]:
    """(-a, --width) a training job's run uses: from its run folder's args.json once it exists, else from its
    command line (the last -a and --width win, as in main.py); None for a MaxNorm stage or an unknown -a."""
    if job.stage:
        return None
    recorded = (read_args_json(job.run_dir) or {}).get("args") or {}
    if recorded.get("arch"):
        return recorded["arch"], recorded.get("width")
    arch = last_flag(job.argv, "-a") or last_flag(job.argv, "--arch")
    width = last_flag(job.argv, "--width")
    return (arch, int(width) if width else 64) if arch else None


def titled(table: Table, args, jobs: List[Job], flags: bool = True) -> str:
    """The table's title, naming the network its runs really used where that is not the published one, and
    (with `flags`) the flags added to its runs."""
    used = sorted({n for n in map(run_network, jobs) if n}, key=str)
    title = table.title
    if table.network_words and used and used != [table.network]:
        runs = ", ".join(network_label(*n) for n in used)
        title = title.replace(table.network_words, f"runs with {runs} (published: {table.network_words})")
    return title + (f" — main.py flags added: {args.extra}" if args.extra and flags else "")


def pm(mean: Optional[float], std: Optional[float]) -> str:
    if mean is None:
        return "—"
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def markdown(title: str, table: Table, rows: List[Dict], seeds: List[int], args) -> str:
    head = ["row", "column", "published", "top-1 best (mean ± std)", "n", "best − published [95 % CI]", "top-1 last",
            "many", "medium", "few", "minutes per run", "not done"]
    lines = [f"# {title}", "",
             f"Seeds {','.join(map(str, seeds))}" + (f"; main.py flags added: `{args.extra}`" if args.extra else "")
             + (f"; MaxNorm stage flags added: `{args.maxnorm_extra}`" if args.maxnorm_extra else "") + ".",
             BEST_NOTE + "; many/medium/few are the last epoch's (for + MaxNorm, the stage's last epoch), "
             "means over seeds ('empty': the test set has no class in that group; '—': no finished run); std is "
             "the sample standard deviation. The 95 % interval of best − published is Student's t over the seeds "
             "(n >= 2); 'inside' when the published value lies within the interval of the measured mean.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        published = fmt(r["published"]) + (f" ({r['published_groups']})" if r["published_groups"] else "")
        lines.append("| " + " | ".join([
            r["row"], r["column"], published or "—", pm(r["best_mean"], r["best_std"]), str(r["n"]),
            difference_text(r), pm(r["last_mean"], r["last_std"]),
            *(fmt(r[g]) or ("empty" if r["n"] else "—") for g in ("many", "medium", "few")),
            fmt(r["minutes_per_run"], ".1f"), r["missing"]]) + " |")
    lines += ["", "Columns: " + "; ".join(f"{k}: {v}" for k, v in table.columns.items()) + "."]
    return "\n".join(lines)


CSV_FIELDS = ["row", "column", "published", "n", "best_mean", "best_std", "diff", "diff_low", "diff_high",
              "published_inside", "last_mean", "last_std", "many", "medium", "few", "minutes_per_run", "missing"]


def write_csv(path: str, rows: List[Dict]) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if r[k] is None else int(r[k]) if isinstance(r[k], bool) else tidy_floats(r[k])
                         for k in CSV_FIELDS})
    write_text(path, text.getvalue())


def write_table(args, table: Table, rows: List[Row], seeds: List[int], out: str, manifest: Dict, jobs: List[Job],
                say) -> None:
    """OUT/table.md, table.csv and table.png from the runs finished so far, and the table on the terminal."""
    result = table_rows(table, rows, seeds, out, args, jobs, manifest["seconds"], manifest.get("data", {}))
    text = markdown(titled(table, args, jobs, flags=False), table, result, seeds, args)
    write_text(os.path.join(out, "table.md"), text + "\n")
    write_csv(os.path.join(out, "table.csv"), result)
    figure = plot_reproduction(result, titled(table, args, jobs), os.path.join(out, "table.png"))
    say("\n" + text + f"\n\nwritten: {os.path.join(out, 'table.md')}, table.csv"
        + (", table.png" if figure else f"; no figure: {figure_note()}"))


def figure_note() -> str:
    return "matplotlib is not installed (pip install matplotlib)"
