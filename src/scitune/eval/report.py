"""Markdown rendering of evaluation results, and `compare_runs`: several runs' headline numbers side by side in one
table and one bar plot (``scitune eval report RUN...``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scitune.io import DataError, read_json, write_text

__all__ = ["compare_runs", "fmt", "md_table"]


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: floats with ``digits`` decimals, None as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 2) -> str:
    """A GitHub Markdown table; cells go through `fmt` (``|`` in a cell is escaped)."""

    def cell(v: Any) -> str:
        return fmt(v, digits).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _load_run(run: str | os.PathLike[str]) -> tuple[str, dict[str, Any]]:
    path = Path(run)
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise DataError(f"{run}: no results.json (pass an eval output folder or its results.json)")
    results = read_json(file)
    if not isinstance(results, dict) or not isinstance(results.get("summary"), dict):
        raise DataError(f"{file}: not a scitune eval results file (no 'summary' object)")
    return str(file.parent), results


def _run_names(dirs: list[str]) -> list[str]:
    """Short unique column names: the folder name, with parent folders added until the names differ."""
    parts = [Path(d).resolve().parts for d in dirs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [f"{i}:{d}" for i, d in enumerate(dirs)]


def compare_runs(
    runs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str] | None = None, overwrite: bool = False
) -> str:
    """Put several eval runs side by side: one row per ``benchmark/metric`` of their ``summary``, one column per run.

    Args:
        runs: eval output folders (or their results.json files).
        out_dir: where to write ``comparison.md`` and ``comparison.png`` (a grouped bar plot); None writes nothing.

    Returns:
        The Markdown table.
    """
    if not runs:
        raise ValueError("compare_runs: give at least one run folder")
    loaded = [_load_run(r) for r in runs]
    names = _run_names([d for d, _ in loaded])
    metrics: list[str] = []
    for _, res in loaded:
        for key, value in res["summary"].items():
            full = f"{res.get('benchmark', '?')}/{key}"
            if isinstance(value, int | float) and not isinstance(value, bool) and full not in metrics:
                metrics.append(full)
    values = {
        name: [res["summary"].get(m.split("/", 1)[1]) if res.get("benchmark") == m.split("/", 1)[0] else None
               for m in metrics]
        for name, (_, res) in zip(names, loaded)
    }  # fmt: skip
    rows = [[m, *(values[n][i] for n in names)] for i, m in enumerate(metrics)]
    table = md_table(["metric", *names], rows)
    if out_dir is not None:
        from scitune.eval.plots import bar_chart
        from scitune.outputs import claim_output_folder

        out = claim_output_folder(out_dir, "eval-comparison", ("comparison.md", "comparison.png"), overwrite)
        bar_chart(out / "comparison.png", metrics, values, title="scitune eval runs", horizontal=len(metrics) > 6)
        legend = "\n".join(f"- `{n}`: {d}" for n, (d, _) in zip(names, loaded))
        write_text(out / "comparison.md", f"# Eval comparison\n\n{legend}\n\n{table}\n![comparison](comparison.png)\n")
    return table
