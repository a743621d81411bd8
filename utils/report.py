"""Evaluation reports for people: a short table, the confusion matrix, and a per-class plot (PNG)."""
from typing import Dict, List, Sequence

import torch
from PIL import Image, ImageDraw

from utils.metrics import format_group, shot_groups


def confusion_cells(top1: torch.Tensor, targets: torch.Tensor, num_classes: int) -> List[List[int]]:
    """The confusion matrix as [true class, predicted class, count] for every non-zero cell.

    Sparse, so that it stays small for thousands of classes.
    """
    flat = torch.bincount(targets * num_classes + top1, minlength=num_classes * num_classes)
    cells = flat.nonzero().squeeze(1)
    return [[int(c) // num_classes, int(c) % num_classes, int(flat[c])] for c in cells]


def table(result: Dict) -> str:
    groups = result["group_sizes"]
    lines = [
        "| head | top-1 | top-5 | many | medium | few |",
        "|---|---|---|---|---|---|",
        f"| {result['head']} | {result['top1']:.2f} | {result['top5']:.2f} | {format_group(result['many'])} | "
        f"{format_group(result['medium'])} | {format_group(result['few'])} |",
        f"shot rule '{result['shot_rule']}': {groups['many']} many, {groups['medium']} medium, "
        f"{groups['few']} few-shot classes",
    ]
    return "\n".join(lines)


def plot_per_class(per_class: Sequence, train_counts: Sequence[int], rule: str, path: str, title: str = "") -> None:
    """Bars of per-class test accuracy, classes sorted by training count (largest first), with
    the many/medium/few bands shaded and each class's training count drawn as a line (log scale)."""
    order = sorted(range(len(train_counts)), key=lambda c: -train_counts[c])
    groups = shot_groups(train_counts, rule)
    band_of = {c: g for g, cs in groups.items() for c in cs}
    colours = {"many": (222, 235, 247), "medium": (254, 230, 206), "few": (229, 245, 224)}
    width, height, left, right, top, bottom = 900, 420, 60, 60, 40, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    step = plot_w / max(len(order), 1)
    for i, c in enumerate(order):  # shaded bands
        draw.rectangle([left + i * step, top, left + (i + 1) * step, top + plot_h], fill=colours[band_of[c]])
    for pct in range(0, 101, 20):  # accuracy grid and labels
        y = top + plot_h * (1 - pct / 100)
        draw.line([left, y, left + plot_w, y], fill=(200, 200, 200))
        draw.text((left - 30, y - 6), f"{pct}%", fill="black")
    max_log = max(torch.tensor(max(train_counts) + 1.0).log10().item(), 1e-9)
    previous = None
    for i, c in enumerate(order):
        acc = per_class[c] or 0.0
        x0, x1 = left + i * step + step * 0.15, left + (i + 1) * step - step * 0.15
        draw.rectangle([x0, top + plot_h * (1 - acc / 100), x1, top + plot_h], fill=(49, 130, 189))
        point = (left + (i + 0.5) * step, top + plot_h * (1 - torch.tensor(train_counts[c] + 1.0).log10().item() / max_log))
        if previous:
            draw.line([previous, point], fill=(214, 39, 40), width=2)
        previous = point
        if len(order) <= 50:  # class index under its bar
            draw.text((left + (i + 0.5) * step - 6, top + plot_h + 4), str(c), fill="black")
    for frac in (0.0, 0.5, 1.0):  # right axis: training count, log scale
        y = top + plot_h * (1 - frac)
        draw.text((left + plot_w + 6, y - 6), f"{10 ** (frac * max_log) - 1:.0f}", fill=(214, 39, 40))
    x = left
    for name in ("many", "medium", "few"):
        draw.rectangle([x, 12, x + 12, 24], fill=colours[name], outline="black")
        draw.text((x + 16, 12), f"{name} ({len(groups[name])})", fill="black")
        x += 110
    draw.text((x + 10, 12), "bars: test accuracy   red line: training images (right axis, log)", fill="black")
    draw.text((left, height - 22), f"classes sorted by training count, largest first ({rule} shot rule)  {title}",
              fill="black")
    img.save(path, format="PNG")
