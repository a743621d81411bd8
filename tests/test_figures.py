"""The reproduction figure: what its bars show, with and without published values."""
import os

import pytest

from utils.figures import plot_reproduction

axes = pytest.importorskip("matplotlib.axes")


def cell(row, column, curves, published, best, std=None, last=None):
    diff = None if published is None or best is None else best - published
    return {"row": row, "column": column, "curves": curves, "published": published, "best_mean": best,
            "best_std": std, "last_mean": last, "diff": diff, "n": len(curves) or 2}


@pytest.fixture
def bars(monkeypatch):
    """The values and error bars each horizontal bar chart is drawn with."""
    drawn = []
    real = axes.Axes.barh

    def record(ax, y, width, *args, **kwargs):
        drawn.append((list(width), list(kwargs.get("xerr", []))))
        return real(ax, y, width, *args, **kwargs)

    monkeypatch.setattr(axes.Axes, "barh", record)
    return drawn


def test_published_cells_show_their_difference(tmp_path, bars):
    cells = [cell("IF 100", "glmc", {1: [10.0, 20.0], 2: [12.0, 22.0]}, 87.75, 21.0, std=1.5),
             cell("IF 100", "maxnorm", {}, 89.58, 25.0, std=0.5, last=24.0),  # a stage: no curves of its own
             cell("IF 100", "updated", {1: [11.0, 19.0]}, None, 19.0)]  # nothing published: no bar
    path = str(tmp_path / "t.png")
    assert plot_reproduction(cells, "a title " * 30, path) and os.path.getsize(path) > 0
    (values, errors), = bars
    assert values == pytest.approx([21.0 - 87.75, 25.0 - 89.58]) and errors == [1.5, 0.5]


def test_a_table_nobody_published_shows_the_measured_figures(tmp_path, bars):
    cells = [cell("IF 100", "standard", {1: [10.0, 13.0]}, None, 13.0),
             cell("IF 50", "standard", {1: [9.0, 16.0], 2: [8.0, 14.0]}, None, 15.0, std=1.4)]
    assert plot_reproduction(cells, "standard", str(tmp_path / "t.png"))
    (values, errors), = bars
    assert values == [13.0, 15.0] and errors == [0, 1.4]


def test_one_epoch_curves_have_markers_and_one_integer_tick(tmp_path, monkeypatch):
    """A one-epoch run's curve is a single point: drawn with a marker, on an axis whose only tick is epoch 1."""
    figure = pytest.importorskip("matplotlib.figure")
    markers, ticks = [], []
    real_plot, real_save = axes.Axes.plot, figure.Figure.savefig

    def plot(ax, *args, **kwargs):
        markers.append(kwargs.get("marker"))
        return real_plot(ax, *args, **kwargs)

    def save(fig, *args, **kwargs):
        curves = fig.axes[0]
        ticks.extend(t for t in curves.get_xticks() if curves.get_xlim()[0] <= t <= curves.get_xlim()[1])
        return real_save(fig, *args, **kwargs)

    monkeypatch.setattr(axes.Axes, "plot", plot)
    monkeypatch.setattr(figure.Figure, "savefig", save)
    cells = [cell("IF 100", "glmc", {1: [23.8], 2: [21.0]}, 87.75, 22.4, std=2.0)]
    assert plot_reproduction(cells, "one epoch", str(tmp_path / "t.png"))
    assert markers == ["o", "o"] and list(ticks) == [1.0]
