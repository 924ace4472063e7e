"""Evaluation plots as PNG files: grouped bar charts and histograms, drawn on matplotlib's Agg canvas (headless,
no pyplot global state) and written atomically."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from scitune.io import atomic_path

__all__ = ["bar_chart", "histograms"]


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike[str]) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def bar_chart(
    path: str | os.PathLike[str],
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    title: str = "",
    ylabel: str = "",
    horizontal: bool = False,
) -> None:
    """Grouped bars: one group per label, one bar per series (None draws no bar); values are printed on the bars.

    Args:
        path: the PNG to write.
        labels: category names (x axis, or y axis when ``horizontal``).
        series: series name -> one value per label.
        title: plot title.
        ylabel: value-axis label.
        horizontal: horizontal bars (better for many or long labels).
    """
    names = list(series)
    n, k = len(labels), max(1, len(names))
    width = 0.8 / k
    long_side = max(4.0, 0.45 * n * max(1, k) + 1.5)
    fig = _figure(8.0, long_side) if horizontal else _figure(long_side, 4.5)
    ax = fig.add_subplot()
    for j, name in enumerate(names):
        values = list(series[name])
        if len(values) != n:
            raise ValueError(f"series {name!r} has {len(values)} values for {n} labels")
        pos = [i - 0.4 + width * (j + 0.5) for i in range(n)]
        heights = [0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in values]
        bars = (ax.barh if horizontal else ax.bar)(pos, heights, width, label=name)
        texts = ["" if v is None else f"{v:.1f}" for v in values]
        ax.bar_label(bars, labels=texts, fontsize=7, padding=2)
    ticks = list(range(n))
    if horizontal:
        ax.set_yticks(ticks, labels=list(labels))
        ax.invert_yaxis()
        ax.set_xlabel(ylabel)
    else:
        ax.set_xticks(ticks, labels=list(labels), rotation=30 if n > 4 else 0, ha="right" if n > 4 else "center")
        ax.set_ylabel(ylabel)
    if len(names) > 1:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    _save(fig, path)


def histograms(
    path: str | os.PathLike[str],
    series: Mapping[str, Sequence[float]],
    title: str = "",
    xlabel: str = "",
    bins: int = 20,
) -> None:
    """One histogram panel per series, side by side (e.g. per-caption BLEU and ROUGE-L)."""
    names = list(series)
    fig = _figure(4.0 * max(1, len(names)), 3.5)
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, max(1, len(names)), i + 1)
        ax.hist(list(series[name]), bins=bins, color="tab:blue", alpha=0.8)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("count")
    if title:
        fig.suptitle(title)
    _save(fig, path)
