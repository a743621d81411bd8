"""The released models as a table: `scripts/reproduce.py released --checkpoints DIR --root DATA [ROW=FILE ...]`.

Each model the authors' README links (the six updated CIFAR models, ImageNet-LT, ImageNet-LT +
BS, iNaturalist 2018) is evaluated as it is by test.py, beside the figures published for it
(many / medium / few where published). A checkpoint is the row's when it is named after the row
(`cifar10-if100.pth.tar` or `.pth`, as `--dry_run` lists) or when a `ROW=FILE` argument says so;
rows without one are listed with the link to fetch it. The data each found model needs is
checked before anything is evaluated.
"""
import json
import os
import subprocess
import sys
from typing import Dict, List, Optional

from datasets import LIST_DATASETS, default_list_paths
from datasets.cifar_lt import find_cifar_folder
from glmc.paper_tables import RELEASED, ReleasedModel
from utils.errors import UsageError
from utils.safe_files import make_folder, write_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROUPS = ("many", "medium", "few")


def find_checkpoints(folder: Optional[str], assignments: List[str], models: List[ReleasedModel]) -> Dict[str, str]:
    """{row: checkpoint path}: ROW=FILE arguments first, then files in `folder` named after their row."""
    names = {m.name for m in models}
    found: Dict[str, str] = {}
    for item in assignments:
        row, sep, path = item.partition("=")
        if not sep or row not in {m.name for m in RELEASED}:
            raise UsageError(f"{item!r}: expected ROW=FILE with ROW one of {', '.join(m.name for m in RELEASED)}")
        if not os.path.isfile(path):
            raise UsageError(f"{item!r}: {path!r} is not a file")
        if row in names:
            found[row] = path
    if folder is not None and not os.path.isdir(folder):
        raise UsageError(f"--checkpoints {folder!r} is not a folder")
    for model in models:
        for suffix in (".pth.tar", ".pth"):
            path = os.path.join(folder or "", model.name + suffix)
            if model.name not in found and folder and os.path.isfile(path):
                found[model.name] = path
    return found


def flag(flags: List[str], name: str) -> str:
    return flags[flags.index(name) + 1]


def missing_data(model: ReleasedModel, root: str) -> Optional[str]:
    """What is missing under `root` for the model's test set and training counts, or None."""
    flags = model.test_flags.split()
    dataset = flag(flags, "--dataset")
    if dataset in LIST_DATASETS:
        lists = [p for p in default_list_paths(dataset, root) if not os.path.isfile(p)]
        return f"{', '.join(lists)} not found" if lists else None
    return None if find_cifar_folder(root, dataset) else f"no {dataset} release under {root}"


def evaluate(model: ReleasedModel, path: str, root: str, out: str) -> Dict:
    """test.py on the checkpoint (the released layout, evaluated with fc_cb as released): its JSON report."""
    report = os.path.join(out, f"{model.name}.json")
    done = subprocess.run([sys.executable, os.path.join(REPO, "test.py"), *model.test_flags.split(), "--root", root,
                           "--resume", path, "--json", report], capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
        return {"error": lines[-1] if lines else f"exit {done.returncode}"}
    with open(report) as f:
        return json.load(f)


def figure(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def markdown(models: List[ReleasedModel], results: Dict[str, Dict], found: Dict[str, str]) -> str:
    lines = ["| model | checkpoint | published top-1 | top-1 | top-1 − published | many / medium / few (published) |",
             "|---|---|---|---|---|---|"]
    for m in models:
        result = results.get(m.name, {})
        top1 = result.get("top1")
        groups = " / ".join(figure(result.get(g)) for g in GROUPS)
        if "many" in m.published:
            groups += " (" + " / ".join(f"{m.published[g]:.2f}" for g in GROUPS) + ")"
        diff = f"{top1 - m.published['top1']:+.2f}" if top1 is not None else result.get("error", "not found")
        lines.append(f"| {m.label} | {os.path.basename(found[m.name]) if m.name in found else '—'} | "
                     f"{m.published['top1']:.2f} | {figure(top1)} | {diff} | {groups} |")
    return "\n".join(lines)


def run(checkpoints: Optional[str], assignments: List[str], root: str, out: str, rows: Optional[str],
        dry_run: bool) -> int:
    models = list(RELEASED)
    if rows:
        wanted = [r.strip() for r in rows.split(",") if r.strip()]
        unknown = sorted(set(wanted) - {m.name for m in RELEASED})
        if unknown:
            raise UsageError(f"--rows: {', '.join(unknown)} not among the released models: "
                             + ", ".join(m.name for m in RELEASED))
        models = [m for m in models if m.name in wanted]
    if checkpoints is None and not assignments:
        raise UsageError("released: give --checkpoints DIR (the downloaded models, each named <row>.pth.tar) or "
                         "ROW=FILE arguments")
    found = find_checkpoints(checkpoints, assignments, models)
    for m in models:
        print(f"{m.name}: " + (found[m.name] if m.name in found else f"not found; download it from {m.link} as "
                               f"{os.path.join(checkpoints or '.', m.name + '.pth.tar')}"))
    lacking = {m.name: missing_data(m, root) for m in models if m.name in found}
    lacking = {name: why for name, why in lacking.items() if why}
    if lacking:
        raise UsageError("the data of these models is missing, nothing was evaluated: "
                         + "; ".join(f"{name}: {why}" for name, why in lacking.items()))
    if dry_run or not found:
        print("nothing to evaluate" if not found else f"{len(found)} of {len(models)} models would be evaluated")
        return 0 if found else 2
    make_folder(out)
    results = {}
    for m in models:
        if m.name in found:
            print(f"evaluating {m.name} ...", flush=True)
            results[m.name] = evaluate(m, found[m.name], root, out)
    text = markdown(models, results, found)
    write_text(os.path.join(out, "released.md"), text + "\n")
    print("\n" + text + f"\n\nwritten: {os.path.join(out, 'released.md')} and one test.py report per model")
    return 1 if any("error" in r for r in results.values()) else 0
