"""Mutation score of the fast tests over the core files: how many deliberate faults the tests catch.

    pip install mutmut==2.5.1
    python bench/mutation_score.py                      # every core file (about an hour on 2 cores)
    python bench/mutation_score.py glmc/mixing.py      # one file
    python bench/mutation_score.py --json scores.json

Works on a copy of the working tree (the tree itself is never mutated). Each file is
mutated by mutmut, one small change at a time (an operator, a constant, a comparison,
a removed call); a mutant is killed when the fast tests that exercise that file fail
(also by an error: a mutant that breaks the import is run again and counted as killed).
Prints per file: mutants, killed, survived, timed out, not run (mutmut skipped them),
the score (killed / run), and the diff of every survivor. Not part of CI: it measures the suite, it does not gate it.
"""
import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = "python -m pytest -x -q -m 'not slow' -p no:cacheprovider"
# core file -> the fast tests that exercise it
CORE = {
    "glmc/losses.py": ["tests/test_method.py"],
    "glmc/mixing.py": ["tests/test_method.py"],
    "utils/metrics.py": ["tests/test_metrics.py"],
    "glmc/schedule.py": ["tests/test_schedule.py", "tests/test_image_files.py"],
    "datasets/cifar_lt.py": ["tests/test_data.py"],
    "datasets/tensor_path.py": ["tests/test_speed_and_scale.py"],
    "datasets/loaders.py": ["tests/test_data.py", "tests/test_speed_and_scale.py"],
}
IGNORED = shutil.ignore_patterns(".git", "runs", "data", ".device_data", ".whl", ".gl", "__pycache__",
                                 ".mutmut-cache", "*.pth.tar")


def mutate(copy: str, path: str, tests: List[str]) -> None:
    runner = f"{FAST} {' '.join(tests)}"
    # decorator removal is left out: mutmut 2.5.1 hung on removing a bare @dataclass
    subprocess.run(["mutmut", "run", "--paths-to-mutate", path, "--runner", runner, "--tests-dir", "tests",
                    "--disable-mutation-types", "decorator"],
                   cwd=copy, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def survives_strictly(copy: str, filename: str, mutant_id: int) -> bool:
    """mutmut 2 counts only pytest's exit code 1 as a kill; a mutant that breaks the import (exit
    code 2, a collection error) passes as a survivor. Run such a survivor again: any failure kills it."""
    path = os.path.join(copy, filename)
    original = open(path).read()
    try:
        if subprocess.run(["mutmut", "apply", str(mutant_id)], cwd=copy, capture_output=True).returncode:
            raise RuntimeError(f"mutmut could not apply mutant {mutant_id} in {copy}")
        present = [t for t in CORE[filename] if os.path.exists(os.path.join(copy, t))]  # an older copy's tests
        tests = subprocess.run(f"{FAST} {' '.join(present)}", shell=True, cwd=copy, capture_output=True)
        return tests.returncode == 0
    finally:
        with open(path, "w") as f:
            f.write(original)


def scores(copy: str, files: List[str]) -> Dict[str, Dict]:
    db = sqlite3.connect(os.path.join(copy, ".mutmut-cache"))
    rows = db.execute("SELECT SourceFile.filename, Mutant.id, Mutant.status FROM Mutant JOIN Line ON "
                      "Mutant.line = Line.id JOIN SourceFile ON Line.sourcefile = SourceFile.id").fetchall()
    db.close()  # `mutmut apply` below needs the cache unlocked
    out: Dict[str, Dict] = {}
    for filename, mutant_id, status in rows:
        if filename not in files:
            continue
        entry = out.setdefault(filename, {"mutants": 0, "killed": 0, "survived": [], "timeout": [], "other": []})
        entry["mutants"] += 1
        if status in ("ok_killed", "ok_suspicious"):  # suspicious: killed, but the tests ran slowly
            entry["killed"] += 1
        elif status == "bad_survived":
            if filename in CORE and not survives_strictly(copy, filename, mutant_id):
                entry["killed"] += 1
            else:
                entry["survived"].append(mutant_id)
        elif status == "bad_timeout":
            entry["timeout"].append(mutant_id)
        else:
            entry["other"].append(mutant_id)
    for filename, entry in out.items():
        tested = entry["killed"] + len(entry["survived"]) + len(entry["timeout"])
        entry["score"] = 100.0 * entry["killed"] / max(tested, 1)
        entry["survivors"] = {m: subprocess.run(["mutmut", "show", str(m)], cwd=copy, capture_output=True,
                                                text=True).stdout for m in entry["survived"]}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("files", nargs="*", help=f"core files (default: {', '.join(CORE)})")
    parser.add_argument("--json", default=None, help="also write the scores and survivors here")
    parser.add_argument("--rescore", default=None, help="score the mutants already run in this copy (no new run)")
    opts = parser.parse_args()
    if shutil.which("mutmut") is None:
        print("error: mutmut is not installed: pip install mutmut==2.5.1", file=sys.stderr)
        return 2
    files = opts.files or list(CORE)
    unknown = [f for f in files if f not in CORE]
    if unknown:
        print(f"error: no test list for {unknown}; known files: {list(CORE)}", file=sys.stderr)
        return 2
    copy = opts.rescore
    if copy is None:
        copy = os.path.join(tempfile.mkdtemp(prefix="mutation_"), "repo")
        shutil.copytree(REPO, copy, ignore=IGNORED)
        for path in files:
            print(f"mutating {path} (tests: {' '.join(CORE[path])})", flush=True)
            mutate(copy, path, CORE[path])
    result = scores(copy, files)
    print("\n| file | mutants | killed | survived | timed out | not run | score |\n|---|---|---|---|---|---|---|")
    for filename, e in sorted(result.items()):
        print(f"| {filename} | {e['mutants']} | {e['killed']} | {len(e['survived'])} | {len(e['timeout'])} | "
              f"{len(e['other'])} | {e['score']:.1f} % |")
    for filename, e in sorted(result.items()):
        for mutant_id, diff in e["survivors"].items():
            print(f"\nsurvivor {mutant_id} in {filename}:\n{diff.strip()}")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
