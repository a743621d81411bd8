"""`metrics.jsonl`: one JSON record per finished epoch, appended after the epoch's checkpoint, and
repaired on resume to match the checkpoint being continued."""
import json
import os
from typing import Dict, List, Optional

from utils.errors import writing
from utils.progress import plural
from utils.run_log import tidy_floats
from utils.safe_files import open_append, write_text

METRICS = "metrics.jsonl"


def read_metrics(path: str, warn=None) -> List[Dict]:
    """The records of a metrics.jsonl; a torn or foreign line, or one that is not UTF-8 text, is skipped (and
    named through `warn`)."""
    records = []
    if not os.path.isfile(path):
        return records
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
            except ValueError:  # UnicodeDecodeError included
                record = None
            if not isinstance(record, dict) or "epoch" not in record:
                if warn:
                    warn(f"{path}, line {number}: not a complete metrics record; skipped")
                continue
            records.append(record)
    return records


def append_metrics(path: str, record: Dict) -> None:
    with writing(path):
        with open_append(path) as f:
            f.write(json.dumps(tidy_floats(record)) + "\n")
            f.flush()
            os.fsync(f.fileno())


def repair_metrics(path: str, epochs_done: int, own_record: Optional[Dict]) -> Optional[str]:
    """Make metrics.jsonl hold exactly one record per finished epoch up to `epochs_done`.

    Drops torn lines and records of epochs the checkpoint does not have, and adds the
    checkpoint's own record of its last epoch when the process died before writing it.
    Returns what was changed, or None.
    """
    skipped: List[str] = []
    records = read_metrics(path, skipped.append)
    kept, seen = [], set()
    for record in records:
        if record["epoch"] <= epochs_done and record["epoch"] not in seen:
            kept.append(record)
            seen.add(record["epoch"])
    added = own_record is not None and own_record["epoch"] not in seen
    if added:
        kept.append(own_record)
    if not skipped and len(kept) == len(records) and not added:
        return None
    write_text(path, "".join(json.dumps(tidy_floats(r)) + "\n" for r in kept))
    dropped = len(records) - (len(kept) - added)
    return (f"metrics.jsonl repaired to match the checkpoint ({plural(epochs_done, 'epoch')}): "
            f"{plural(dropped, 'record')} of other epochs dropped, {plural(int(added), 'record')} added from the "
            f"checkpoint, {plural(len(skipped), 'torn line')} removed")
