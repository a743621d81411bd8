"""Under `torchrun --max_restarts N`: which run folder a restarted worker group continues.

The first group notes, under --root_log, the run folder it started for each seed; a
restarted group reads the note and resumes that folder from its last checkpoint.
"""
import json
import os
from typing import Iterable, Optional

from utils.errors import UsageError, writing
from utils.runs import resume_checkpoint_path
from utils.safe_files import make_folder, write_text

ELASTIC_MARKERS = ".torchrun"  # under --root_log: the run folder of each seed of a running torchrun job


def _elastic_marker(root_log: str, job: str, seed: int) -> str:
    return os.path.join(root_log, ELASTIC_MARKERS, f"{job}-seed{seed}.json")


def remember_elastic_run(root_log: str, job: str, seed: int, run_dir: str) -> None:
    """Note the run folder a torchrun job started for `seed`, so that a restarted worker group finds it."""
    path = _elastic_marker(root_log, job, seed)
    with writing(path):
        make_folder(os.path.dirname(path))
    write_text(path, json.dumps({"run_dir": os.path.abspath(run_dir)}))


def elastic_run_to_continue(root_log: str, job: str, seed: int) -> Optional[str]:
    """The run folder an earlier worker group of this torchrun job started for `seed`, if it has a
    checkpoint to continue from (a group lost in its first epoch starts a new folder)."""
    try:
        with open(_elastic_marker(root_log, job, seed)) as f:
            folder = json.load(f)["run_dir"]
        resume_checkpoint_path(folder)
    except (OSError, ValueError, KeyError, TypeError, UsageError):
        return None
    return folder


def forget_elastic_runs(root_log: str, job: str, seeds: Iterable[int]) -> None:
    """Remove the job's notes once every seed is done; the folder goes when it is empty."""
    for seed in seeds:
        try:
            os.remove(_elastic_marker(root_log, job, seed))
        except OSError:
            pass
    try:
        os.rmdir(os.path.join(root_log, ELASTIC_MARKERS))
    except OSError:
        pass
