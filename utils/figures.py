"""Figures drawn with matplotlib, an optional dependency: without it, `plot_*` returns False and draws nothing."""
import textwrap
from typing import Dict, List

from utils.safe_files import write_atomically


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_reproduction(cells: List[Dict], title: str, path: str) -> bool:
    """Left, one panel per table row: top-1 per epoch of every seed of each trained cell, the published
    value as a dashed line of the same colour, and for a cell that trains no epochs of its own (the
    MaxNorm stage) its mean last top-1 as a diamond just after the row's last epoch. One legend for all panels
    (a column has one colour everywhere). Right: measured best top-1 minus published, mean over seeds
    with the sample standard deviation as error bar, for every cell with a published value and a run;
    the measured best top-1 itself where no cell has both (a table nobody published)."""
    plt = _pyplot()
    if plt is None:
        return False
    from matplotlib.ticker import MaxNLocator
    rows = list(dict.fromkeys(c["row"] for c in cells))
    columns = list(dict.fromkeys(c["column"] for c in cells))
    colours = {col: plt.get_cmap("tab10")(i) for i, col in enumerate(columns)}
    fig = plt.figure(figsize=(13, 2.6 * len(rows) + 1.6))
    grid = fig.add_gridspec(len(rows), 2, width_ratios=[1.6, 1])
    legend: Dict = {}
    for i, row in enumerate(rows):
        ax = fig.add_subplot(grid[i, 0])
        in_row = [c for c in cells if c["row"] == row]
        last_epoch = max((len(curve) for c in in_row for curve in c["curves"].values()), default=1)
        stages = [c["column"] for c in in_row if not c["curves"]]  # each stage column its own place after the last
        for c in in_row:
            colour = colours[c["column"]]
            for curve in c["curves"].values():
                ax.plot(range(1, len(curve) + 1), curve, color=colour, alpha=0.8, lw=1.2, marker="o", ms=3,
                        label=f"{c['column']}: each seed")
            if not c["curves"] and c.get("last_mean") is not None:  # just after the last epoch: it comes after it
                ax.plot([last_epoch + 0.15 + 0.15 * stages.index(c["column"])], [c["last_mean"]], marker="D",
                        ls="none", color=colour,
                        label=f"{c['column']}: after the stage (mean, last stage epoch)")
            if c["published"] is not None:
                ax.axhline(c["published"], color=colour, ls="--", lw=1, label=f"{c['column']}: published")
        ax.set_title(row, fontsize=10, loc="left")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlim(0.5, last_epoch + 0.5)  # a one-epoch run: one tick, 1, not 0.95 ... 1.05
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
        if i == len(rows) - 1:
            ax.set_xlabel("epoch")
    ax = fig.add_subplot(grid[:, 1])
    shown = [c for c in cells if c["diff"] is not None]
    if shown:
        key, xlabel = "diff", "best top-1 minus published (points; ± std over seeds)"
    else:  # a table nobody published (or no run of a published cell finished): the measured figures
        shown = [c for c in cells if c.get("best_mean") is not None]
        key, xlabel = "best_mean", "best top-1 (%; ± std over seeds; none published)"
    labels = [f"{c['row']}\n{c['column']} (n={c['n']})" for c in shown]
    ax.barh(range(len(shown)), [c[key] for c in shown], xerr=[c["best_std"] or 0 for c in shown],
            color=[colours[c["column"]] for c in shown], capsize=3)
    ax.set_yticks(range(len(shown)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    if not shown:
        ax.text(0.5, 0.5, "no finished run", ha="center", va="center", transform=ax.transAxes)
    title_lines = textwrap.wrap(title, 110)
    fig.suptitle("\n".join(title_lines), fontsize=11)
    fig.legend(list(legend.values()), list(legend.keys()), loc="lower center", ncol=3, fontsize=8, frameon=False)
    height = fig.get_figheight()  # inches: room for the legend below and the title's lines above
    fig.tight_layout(rect=(0, 0.9 / height, 1, 1 - (0.1 + 0.22 * len(title_lines)) / height))
    write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return True
