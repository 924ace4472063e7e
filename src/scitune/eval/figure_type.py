"""SciCap figure-type evaluation (SciTune §3.1.1, Table 1): locate the type named in a generated text, score it
against the gold types (accuracy per type and overall, confusion matrix) and plot the confusion matrix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scitune.eval.benchmark import BENCHMARKS, Benchmark, EvalOptions, Example, ScoreContext, resolve_image
from scitune.eval.blind import with_blind
from scitune.io import atomic_path

__all__ = [
    "FIGURE_TYPES",
    "NOT_FOUND",
    "FigureTypeBenchmark",
    "FigureTypeOptions",
    "locate_figure_type",
    "plot_confusion",
    "score_figure_types",
]

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


# --------------------------------------------------------------------------------------------------------------------
# The figure-type benchmark (SciTune Table 1)
# --------------------------------------------------------------------------------------------------------------------
SCITUNE_QUESTION = "Describe the following image in detail."
"""The first of SciTune's 16 alignment questions (paper Table 7)."""


@dataclass
class FigureTypeOptions(EvalOptions):
    """Figure type: --data SciCap-style records (JSONL / JSON / folder with image and figure_type), e.g. SciFig's
    scicap/test.jsonl."""

    image_root: str | None = None
    """Folder the records' image paths are relative to; default: the data file's folder, then its parent."""
    question: str = SCITUNE_QUESTION
    """The instruction asked with each figure (the model answers with the type first, as SciTune trains it)."""
    rule: str = "earliest"
    """How the type is located in the text: earliest (any case, spelling variants) or scitune (the authors' exact,
    case-sensitive substring rule)."""
    clip: str | None = None
    """A CLIP-like checkpoint folder: adds the zero-shot baseline (image-text similarity with the five type names)."""
    clip_prompt: str = "a {}"
    """Text template of the zero-shot baseline, {} = the type name (e.g. "a {} from a scientific paper")."""
    clip_prompts: list[str] = field(default_factory=list)
    """More templates scored beside --clip_prompt, as a JSON list ('["a {} from a scientific paper"]'): each gets
    a column, and the best of all is the baseline (``clip_acc``)."""
    blind: bool = False
    """Also run the blind baseline (every figure replaced by a white image of its size), reported beside."""


def scicap_examples(data: str, image_root: str | None, question: str) -> tuple[list[Example], list[dict[str, Any]]]:
    """Examples from SciCap-style records (`scitune.sources.converters.load_scicap` layouts) and the figures."""
    from scitune.sources.converters.scicap import load_scicap

    src = Path(data)
    base = src if src.is_dir() else src.parent
    roots = [Path(image_root)] if image_root else [base, base.parent]
    examples, figures = [], []
    for _, fig in load_scicap(src):
        images = [resolve_image(fig["image"], roots)] if fig["image"] else []
        examples.append(
            Example(str(fig["id"]), question, images, target=fig["caption"], meta={"type": fig["figure_type"]})
        )
        figures.append(fig)
    return examples, figures


@BENCHMARKS.register("figure-type")
@with_blind
class FigureTypeBenchmark(Benchmark):
    """Figure-type accuracy per type and overall (type located in the generated text), with a confusion matrix and
    the zero-shot CLIP baseline side by side."""

    name = "figure-type"
    mode = "generate"
    Options = FigureTypeOptions
    opts: FigureTypeOptions

    def examples(self) -> list[Example]:
        examples, _ = scicap_examples(self.opts.data, self.opts.image_root, self.opts.question)
        self.skipped = [e.id for e in examples if e.meta["type"] not in FIGURE_TYPES]
        kept = [e for e in examples if e.meta["type"] in FIGURE_TYPES]
        for e in kept:
            e.target = e.meta["type"]
        return kept

    def prompt_text(self, example: Example) -> str:
        # SciTune's training records put the image after the question
        return f"{example.text}\n<image>" if example.images else example.text

    def _clip(self, examples: list[Example]) -> dict[str, Any]:
        """The zero-shot baseline: the scores of the best prompt, with ``prompt``, ``model`` and, for several
        prompts, ``by_prompt`` (prompt -> scores)."""
        try:
            from scitune.eval.zeroshot import zero_shot_figure_types
        except ImportError as e:
            return {"note": f"zero-shot baseline unavailable: {e}"}
        missing = [e.images[0] for e in examples if not e.images or not Path(e.images[0]).is_file()]
        if missing:
            return {"note": f"zero-shot baseline skipped: {len(missing)} image(s) not found, e.g. {missing[0]}"}
        paths = [e.images[0] for e in examples]  # opened batch by batch by the classifier
        prompts = list(dict.fromkeys([self.opts.clip_prompt, *self.opts.clip_prompts]))
        by_prompt = {}
        for prompt in prompts:  # the CLIP folder is read once per prompt: a second's work for the micro CLIP
            preds = zero_shot_figure_types(self.opts.clip, paths, list(FIGURE_TYPES), prompt=prompt)
            by_prompt[prompt] = score_figure_types([e.target for e in examples], preds)
        best = max(prompts, key=lambda p: by_prompt[p]["acc"] or 0.0)  # the first of equals
        out = {**by_prompt[best], "prompt": best, "model": self.opts.clip}
        if len(prompts) > 1:
            out["by_prompt"] = by_prompt
        return out

    def score(self, examples: list[Example], predictions: dict[str, dict[str, Any]], ctx: ScoreContext) -> dict:
        texts = {k: r.get("text", "") for k, r in predictions.items()}
        located = [locate_figure_type(texts[e.id], self.opts.rule) if e.id in texts else None for e in examples]
        res = score_figure_types([e.target for e in examples], located)
        out: dict[str, Any] = {
            "summary": {"acc": res["acc"], **{t: res["per_type"][t]["acc"] for t in FIGURE_TYPES}},
            "rule": self.opts.rule,
            "skipped_other_types": len(getattr(self, "skipped", [])),
            "model": res,
        }
        if self.opts.clip and not getattr(self, "scoring_blind", False):
            out["clip"] = self._clip(examples)
            if "acc" in out["clip"]:
                out["summary"]["clip_acc"] = out["clip"]["acc"]
        return out

    def report(self, results: dict[str, Any]) -> str:
        from scitune.eval.report import md_table

        res, clip = results["model"], results.get("clip", {})
        zs = _zero_shot_columns(clip)
        head = ["Figure Type", "n", *zs, "model"]
        rows = [[t, res["per_type"][t]["count"], *(s["per_type"][t]["acc_str"] for s in zs.values()),
                 res["per_type"][t]["acc_str"]] for t in FIGURE_TYPES]  # fmt: skip
        rows.append(["All", res["count"], *(s["acc_str"] for s in zs.values()), res["acc_str"]])
        text = f"Accuracy (%) per gold type; type located with the `{results['rule']}` rule"
        text += f"; {results['skipped_other_types']} records of other types skipped.\n\n" + md_table(head, rows)
        if "note" in clip:
            text += f"\n{clip['note']}\n"
        cols = list(next(iter(res["confusion"].values())))
        text += "\n### Confusion (rows: gold, columns: located)\n\n"
        text += md_table(["gold", *cols], [[g, *(r[c] for c in cols)] for g, r in res["confusion"].items()])
        return text

    def plots(self, results: dict[str, Any], out_dir: Path) -> list[str]:
        from scitune.eval.plots import bar_chart

        res, clip = results["model"], results.get("clip", {})
        plot_confusion(res["confusion"], out_dir / "confusion.png", title="figure type: model")
        series = {"model": [res["per_type"][t]["acc"] for t in FIGURE_TYPES] + [res["acc"]]}
        names = ["per_type.png", "confusion.png"]
        if "per_type" in clip:
            series = {"CLIP zero-shot": [clip["per_type"][t]["acc"] for t in FIGURE_TYPES] + [clip["acc"]], **series}
            plot_confusion(clip["confusion"], out_dir / "clip_confusion.png",
                           title=f"figure type: CLIP zero-shot '{clip.get('prompt', '')}'")  # fmt: skip
            names.append("clip_confusion.png")
        bar_chart(out_dir / "per_type.png", [*FIGURE_TYPES, "All"], series, title="figure-type accuracy (%)",
                  ylabel="accuracy (%)")  # fmt: skip
        return names


def _zero_shot_columns(clip: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Report column name -> zero-shot scores: one per prompt (``CLIP zero-shot '<prompt>'``), none without --clip."""
    if "per_type" not in clip:
        return {}
    by_prompt = clip.get("by_prompt") or {clip.get("prompt", ""): clip}
    return {f"CLIP zero-shot '{p}'": s for p, s in by_prompt.items()}
