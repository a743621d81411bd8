"""Evaluation reports for people: a short table, the confusion matrix, and a per-class plot (PNG)."""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from PIL import Image, ImageDraw, ImageFont

from utils.metrics import format_group, shot_groups
from utils.safe_files import write_atomically


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


PLOT_COLOURS = {"many": (222, 235, 247), "medium": (254, 230, 206), "few": (229, 245, 224)}
BAR, LINE, GRID = (49, 130, 189), (214, 39, 40), (205, 205, 205)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # a scalable font (Pillow >= 10.1 with FreeType)
    except TypeError:
        return ImageFont.load_default()


def class_bars(train_counts: Sequence[int], groups: Dict[str, List[int]], max_bars: int) -> List[Tuple[str, List[int]]]:
    """(shot group, classes) per bar: classes sorted by training count, largest first; above `max_bars`
    classes, runs of k neighbours in that order share a bar, never across a group boundary."""
    k = max(1, math.ceil(len(train_counts) / max_bars))
    bars = []
    for name in ("many", "medium", "few"):
        ranked = sorted(groups[name], key=lambda c: (-train_counts[c], c))
        bars += [(name, ranked[i:i + k]) for i in range(0, len(ranked), k)]
    return bars


def plot_per_class(per_class: Sequence, train_counts: Sequence[int], rule: str, path: str, title: str = "",
                   class_names: Optional[Sequence[str]] = None, max_bars: int = 100) -> None:
    """Bars of per-class test accuracy, classes sorted by training count (largest first), the
    many/medium/few bands shaded and the training counts drawn as a line on a log axis.

    Up to 30 bars each carries its class's name (or index); with more than `max_bars` classes,
    neighbouring classes share a bar showing their mean accuracy, so 1000 classes stay readable.
    """
    groups = shot_groups(train_counts, rule)
    bars = class_bars(train_counts, groups, max_bars)
    per_bar = max(len(cs) for _, cs in bars)
    named = len(bars) <= 30
    font, small = _font(15), _font(12)
    label_h = 95 if named else 40
    width, height, left, right, top = 1100, 520 + label_h, 70, 80, 80
    plot_w, plot_h = width - left - right, height - top - label_h - 45
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    step = plot_w / len(bars)

    def y_of_accuracy(pct: float) -> float:
        return top + plot_h * (1 - pct / 100)

    counts = [train_counts[c] for _, cs in bars for c in cs]
    log_max = math.log10(max(max(counts), 2))

    def y_of_count(n: float) -> float:  # log axis from 1 to the largest count
        return top + plot_h * (1 - math.log10(max(n, 1)) / log_max)

    for i, (group, _) in enumerate(bars):
        draw.rectangle([left + i * step, top, left + (i + 1) * step, top + plot_h], fill=PLOT_COLOURS[group])
    for pct in range(0, 101, 20):
        y = y_of_accuracy(pct)
        draw.line([left, y, left + plot_w, y], fill=GRID)
        draw.text((left - 8, y), f"{pct}%", fill="black", font=small, anchor="rm")
    ticks = sorted({10 ** e for e in range(int(log_max) + 1)} | {max(counts)})
    for n in ticks:
        if n != max(counts) and y_of_count(n) - y_of_count(max(counts)) < 14:
            continue  # too close to the top label
        y = y_of_count(n)
        draw.line([left + plot_w, y, left + plot_w + 5, y], fill=LINE, width=2)
        draw.text((left + plot_w + 8, y), f"{n:,}", fill=LINE, font=small, anchor="lm")
    previous = None
    for i, (_, classes) in enumerate(bars):
        accs = [per_class[c] for c in classes if per_class[c] is not None]
        x0, x1 = left + i * step + step * 0.12, left + (i + 1) * step - step * 0.12
        if accs:
            draw.rectangle([x0, y_of_accuracy(sum(accs) / len(accs)), x1, top + plot_h], fill=BAR)
        point = (left + (i + 0.5) * step,
                 y_of_count(math.exp(sum(math.log(max(train_counts[c], 1)) for c in classes) / len(classes))))
        if previous:
            draw.line([previous, point], fill=LINE, width=2)
        draw.ellipse([point[0] - 2, point[1] - 2, point[0] + 2, point[1] + 2], fill=LINE)
        previous = point
    draw.line([left, top + plot_h, left + plot_w, top + plot_h], fill="black")
    if named:  # each class's name under its bar, written upwards
        for i, (_, (c,)) in enumerate(bars):
            name = str(class_names[c]) if class_names else str(c)
            name = name if len(name) <= 14 else name[:13] + "~"
            label = Image.new("RGB", (label_h - 8, 18), "white")
            ImageDraw.Draw(label).text((label_h - 10, 9), name, fill="black", font=small, anchor="rm")
            label = label.rotate(90, expand=True)
            img.paste(label, (int(left + (i + 0.5) * step - 9), top + plot_h + 6))
        axis = "classes, sorted by training count (largest first)"
    else:  # rank ticks: the position of a class in that order
        total = len(counts)
        spacing = next(s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10 ** 9) if total / s <= 12)
        starts = [1 + sum(len(cs) for _, cs in bars[:i]) for i in range(len(bars))]
        for rank in [1] + list(range(spacing, total + 1, spacing)):
            i = max(j for j, start in enumerate(starts) if start <= rank)  # the bar that holds this rank
            x = left + (i + 0.5) * step
            draw.line([x, top + plot_h, x, top + plot_h + 5], fill="black")
            draw.text((x, top + plot_h + 8), str(rank), fill="black", font=small, anchor="mt")
        axis = ("class rank by training count (1 = most images)"
                + (f"; each bar: mean of up to {per_bar} neighbouring classes" if per_bar > 1 else ""))
    draw.text((left + plot_w / 2, height - 28), axis, fill="black", font=font, anchor="mm")
    draw.text((left, 14), title, fill="black", font=_font(18))
    x = left
    for name in ("many", "medium", "few"):
        draw.rectangle([x, 48, x + 14, 62], fill=PLOT_COLOURS[name], outline="black")
        draw.text((x + 20, 55), f"{name} ({len(groups[name])} classes)", fill="black", font=small, anchor="lm")
        x += 150
    draw.rectangle([x, 48, x + 14, 62], fill=BAR)
    draw.text((x + 20, 55), "test accuracy (left axis)", fill="black", font=small, anchor="lm")
    draw.line([x + 190, 55, x + 214, 55], fill=LINE, width=2)
    draw.text((x + 220, 55), f"training images (right axis, log scale); {rule} shot rule", fill=LINE, font=small,
              anchor="lm")
    write_atomically(path, lambda f: img.save(f, format="PNG"))
