"""SciCap figure-type evaluation (SciTune §3.1.1, Table 1): locate the type named in a generated text, score it
against the gold types (accuracy per type and overall, confusion matrix) and plot the confusion matrix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from scitune.io import atomic_path

__all__ = ["FIGURE_TYPES", "NOT_FOUND", "locate_figure_type", "plot_confusion", "score_figure_types"]

FIGURE_TYPES = ("Graph Plot", "Scatterplot", "Node Diagram", "Equation", "Bar Chart")
"""The five SciCap figure types, in SciTune's order."""

NOT_FOUND = "(none)"
"""Confusion-matrix column for generations in which no figure type was found."""

# Accepted spellings, matched case-insensitively on word boundaries, with an optional plural "s":
# "scatter plot" / "scatter-plot" for Scatterplot and "bar-chart" / "barchart" for Bar Chart; any whitespace
# (including a line break) may separate two-word names.
_SPELLINGS = {
    "Graph Plot": r"graph\s+plot",
    "Scatterplot": r"scatter(?:\s+|-)?plot",
    "Node Diagram": r"node\s+diagram",
    "Equation": r"equation",
    "Bar Chart": r"bar(?:\s+|-)?chart",
}
_PATTERN = re.compile(
    "|".join(f"(?P<t{i}>\\b{_SPELLINGS[t]}s?\\b)" for i, t in enumerate(FIGURE_TYPES)), flags=re.IGNORECASE
)


def locate_figure_type(text: str, rule: str = "earliest") -> str | None:
    """The figure type named in a generated text, or None.

    Args:
        text: the generated output (SciTune's answers start with the type, e.g. "Graph Plot The ratio of ...").
        rule: ``"earliest"`` (default): case-insensitive, the type whose name occurs first wins, spelling variants
            accepted (see ``_SPELLINGS``). ``"scitune"``: the SciTune authors' notebook rule
            (``evaluation/analyze_scicap_performance.ipynb``): exact, case-sensitive substring test of each name
            in `FIGURE_TYPES` order, the first one found wins — use it to reproduce their Table 1.
    """
    if rule == "scitune":
        return next((t for t in FIGURE_TYPES if t in text), None)
    if rule != "earliest":
        raise ValueError(f"unknown rule {rule!r}; known: earliest, scitune")
    m = _PATTERN.search(text)
    return None if m is None else FIGURE_TYPES[int(m.lastgroup[1:])]  # type: ignore[index]


def score_figure_types(golds: Sequence[str], preds: Sequence[str | None]) -> dict[str, Any]:
    """Accuracy per gold type and overall, plus the confusion matrix.

    Args:
        golds: the gold type of each figure (one of `FIGURE_TYPES`).
        preds: the located type of each generation (`locate_figure_type`), None when none was found (wrong).

    Returns:
        ``{"count", "correct", "acc", "acc_str", "per_type": {type: {"count", "correct", "acc", "acc_str"}},
        "confusion": {gold: {pred or NOT_FOUND: n}}}``; accuracies are percentages (Table 1), None for a type
        with no figures; the matrix lists every type (and NOT_FOUND as a column) even when its count is 0.
    """
    if len(golds) != len(preds):
        raise ValueError(f"{len(golds)} gold types but {len(preds)} predictions; they must pair up")
    for what, values, allowed in (("gold", golds, FIGURE_TYPES), ("predicted", preds, (*FIGURE_TYPES, None))):
        bad = [v for v in values if v not in allowed]
        if bad:
            raise ValueError(f"unknown {what} figure type {bad[0]!r}; known: {', '.join(FIGURE_TYPES)}")
    columns = (*FIGURE_TYPES, NOT_FOUND)
    confusion = {g: dict.fromkeys(columns, 0) for g in FIGURE_TYPES}
    for g, p in zip(golds, preds):
        confusion[g][NOT_FOUND if p is None else p] += 1
    per_type = {t: _tally(confusion[t][t], sum(confusion[t].values())) for t in FIGURE_TYPES}
    out = _tally(sum(t["correct"] for t in per_type.values()), len(golds))
    out["per_type"] = per_type
    out["confusion"] = confusion
    return out


def _tally(correct: int, count: int) -> dict[str, Any]:
    acc = 100.0 * correct / count if count else None
    return {"count": count, "correct": correct, "acc": acc, "acc_str": "-" if acc is None else f"{acc:.2f}"}


def plot_confusion(matrix: Mapping[str, Mapping[str, int]], path: str | os.PathLike[str], title: str = "") -> None:
    """Draw ``matrix`` (gold rows × predicted columns, as in `score_figure_types`) as a PNG written atomically.

    Uses matplotlib's Agg canvas directly, so it works headless and leaves pyplot's global state alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = list(matrix)
    cols = list(dict.fromkeys(c for r in rows for c in matrix[r]))
    values = [[matrix[r].get(c, 0) for c in cols] for r in rows]
    fig = Figure(figsize=(1.2 * len(cols) + 2.5, 0.8 * len(rows) + 2.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="Blues")
    peak = max((v for row in values for v in row), default=0)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if peak and v > peak / 2 else "black")
    ax.set_xticks(range(len(cols)), labels=cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), labels=rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
