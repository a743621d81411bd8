"""Write the iNaturalist 2018 image lists from the official annotation files.

    python scripts/make_inat_lists.py --train_json train2018.json --val_json val2018.json --out data/data_txt

writes `iNaturalist18_train.txt` and `iNaturalist18_val.txt`, one
`train_val2018/<supercategory>/<category id>/<file>.jpg <category id>` per line,
the format `--dataset iNaturelist2018` reads (paths relative to `--root`).
"""
import argparse
import json
import os
import sys
from typing import Dict, List, Tuple

LIST_NAMES = {"train": "iNaturalist18_train.txt", "val": "iNaturalist18_val.txt"}


def list_lines(annotation_file: str) -> List[Tuple[str, int]]:
    """(file_name, category_id) for every image of a COCO-style iNat annotation file, in image order."""
    try:
        with open(annotation_file) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"error: cannot read {annotation_file!r}: {exc}") from None
    try:
        category_of: Dict[int, int] = {a["image_id"]: int(a["category_id"]) for a in data["annotations"]}
        return [(image["file_name"], category_of[image["id"]]) for image in data["images"]]
    except (KeyError, TypeError) as exc:
        raise SystemExit(f"error: {annotation_file!r} is not an iNaturalist annotation file "
                         f"(needs 'images' with id/file_name and 'annotations' with image_id/category_id): "
                         f"missing {exc}") from None


def write_list(lines: List[Tuple[str, int]], path: str) -> None:
    with open(path, "w") as f:
        for file_name, category in lines:
            f.write(f"{file_name} {category}\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--train_json", required=True, help="train2018.json")
    parser.add_argument("--val_json", required=True, help="val2018.json")
    parser.add_argument("--out", default=os.path.join("data", "data_txt"), help="output folder (default data/data_txt)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for split, source in (("train", args.train_json), ("val", args.val_json)):
        lines = list_lines(source)
        path = os.path.join(args.out, LIST_NAMES[split])
        write_list(lines, path)
        classes = len({c for _, c in lines})
        print(f"{path}: {len(lines)} images, {classes} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
