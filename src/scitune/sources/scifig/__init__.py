"""SciFig: a synthetic scientific-figure dataset with exact ground truth (type, caption, OCR text, mentions, QA).

`render` samples and draws each figure; this module writes its texts and questions; `dataset` writes
the on-disk layout (in parallel) and the preview gallery.
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from scitune.sources.scifig.text import (
    _article,
    _fmt,
    _join,
    _pick,
    _plural,
    _the,
    _var,
    describe,
)

FIGURE_TYPES: tuple[str, ...] = ("Graph Plot", "Scatterplot", "Node Diagram", "Equation", "Bar Chart")
SPLITS: tuple[str, ...] = ("train", "val", "test")
FORMAT_VERSION = 2
_TXT_EVERY, _TXT_AT, _NO_AT = 7, 3, 6  # figure i also gets a text-context question if i % 7 == 3, no-context if 6
_EVIDENCE = {
    "Graph Plot": "draws lines that connect measurements along two numbered axes",
    "Scatterplot": "marks separate, unconnected points on two numbered axes",
    "Node Diagram": "shows labelled nodes connected by arrows, without axes",
    "Equation": "shows typeset mathematical formulas, numbered on the right",
    "Bar Chart": "uses rectangular bars whose heights encode values for named categories",
}
LECTURES: dict[str, str] = {
    "Figure types": "Scientists choose a kind of figure to suit their data. A graph plot connects measurements "
    "with lines to show how one quantity changes with another. A scatterplot marks separate points to show whether "
    "two measured quantities are related. A bar chart compares amounts across categories with bars of different "
    "heights. A node diagram shows how things are connected with labelled nodes and arrows. An equation figure "
    "presents mathematical formulas, usually numbered.",
    "Reading line graphs": "A line graph shows how a quantity changes as another quantity grows. Read the axis "
    "labels first. The legend tells which line stands for which series. A line that goes up from left to right "
    "shows an increase; a line that goes down shows a decrease.",
    "Reading scatterplots": "A scatterplot shows one point for each measurement of two quantities. If the points "
    "tend to go up from left to right, the correlation is positive. If they tend to go down, it is negative. If "
    "they show no direction, there is no clear correlation.",
    "Reading bar charts": "A bar chart compares amounts. Each bar stands for a category named below it, and the "
    "height of the bar shows the amount, read on the vertical axis. Taller bars show larger amounts.",
    "Reading diagrams": "A node diagram shows things and how they are connected. Each node is a labelled shape, and "
    "each arrow connects one node to another. The number of connections of a node is the number of arrows that "
    "start or end at it.",
    "Reading equations": "An equation states that two expressions are equal. The quantity being defined is usually "
    "written alone on the left-hand side of the equals sign. Papers number their equations in parentheses so that "
    "the text can refer to them.",
    "Reading data in text": "Data can be given in words or tables instead of figures. To compare values, find the "
    "number given for each item and compare the numbers.",
}
_GRADES = {"Figure types": (6, 9), "Reading line graphs": (4, 8), "Reading scatterplots": (7, 10),
           "Reading bar charts": (3, 6), "Reading diagrams": (5, 8), "Reading equations": (8, 12),
           "Reading data in text": (4, 7)}  # fmt: skip
_PRACTICES = ("natural science", "science-and-engineering-practices")


# Question kinds, by the question's wording (the templates below write these).
QUESTION_KINDS: tuple[tuple[str, str], ...] = (
    ("figure-type", r"^Which type of figure is shown\?"),
    ("figure-choice", r"^Which type of figure is best for"),
    ("trend", r"^Which trend does the plotted curve"),
    ("trend-labelled", r"^Which trend does the curve labelled"),
    ("count-curves", r"^How many curves"),
    ("count-groups", r"^How many groups of points"),
    ("count-bars", r"^How many bars"),
    ("count-nodes", r"^How many nodes"),
    ("count-equations", r"^How many numbered equations"),
    ("curve-color", r"^What color is the curve"),
    ("point-color", r"^What color are the points"),
    ("bar-color", r"^What color are the bars"),
    ("bar-color-labelled", r"^What color is the bar for"),
    ("correlation", r"^Which kind of correlation"),
    ("tallest-shortest-bar", r"^Which bar is the (tallest|shortest)"),
    ("hub-node", r"^Which node has the most connections"),
    ("arrow-target", r"^Which node does the arrow"),
    ("equation-lhs", r"^Which quantity is on the left-hand side"),
    ("equation-function", r"^Which function appears"),
)
GLANCE_KINDS: tuple[str, ...] = ("figure-type", "trend", "count-curves", "count-groups", "count-bars",
                                 "count-nodes", "count-equations", "bar-color", "correlation")  # fmt: skip
"""Kinds answerable from shapes, colours and counts alone, without reading any text in the figure (the others
need a legend entry, a bar or node label or an equation read, which a low-resolution image does not show)."""


def question_kind(question: str) -> str:
    """The kind (a `QUESTION_KINDS` name) of a SciFig question, or ``other``."""
    return next((k for k, pat in QUESTION_KINDS if re.search(pat, question)), "other")


@dataclass
class SciFigConfig:
    """What `generate_scifig` builds; the manifest stores it and a rerun with an equal config does nothing."""

    n_train: int = 1000
    """Figures in the train split."""
    n_val: int = 200
    """Figures in the val split."""
    n_test: int = 200
    """Figures in the test split."""
    image_size: int = 224
    """Side of the square PNG images, in pixels."""
    seed: int = 0
    """Base seed: figure i of split s depends only on (seed, s, i)."""
    questions_per_figure: int = 1
    """Image questions per figure, of distinct kinds; 2 figures in 7 also give one text-only question."""
    types: tuple[str, ...] = FIGURE_TYPES
    """Figure types to draw, cycled through so that every split is balanced."""
    kinds: tuple[str, ...] = ()
    """Image-question kinds to ask (`QUESTION_KINDS` names, e.g. `GLANCE_KINDS`); empty = every kind."""
    fixed_choices: bool = False
    """List each question's choices in a fixed order, as printed exams do (counts ascending over the kind's whole
    range, names in the vocabulary's order, a text question's names in its hint's order), so the answer's letter
    follows from the answer; default: shuffled, and counts are 4 values around the answer."""

    def __post_init__(self) -> None:
        self.types = tuple(self.types)
        unknown = [t for t in self.types if t not in FIGURE_TYPES]
        if unknown or not self.types or len(set(self.types)) != len(self.types):
            raise ValueError(f"types: {list(self.types)} must be distinct names from {list(FIGURE_TYPES)}")
        if min(self.n_train, self.n_val, self.n_test) < 0:
            raise ValueError("n_train, n_val and n_test must be >= 0")
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {self.image_size}")
        self.kinds = tuple(self.kinds)
        unknown_kinds = sorted(set(self.kinds) - {k for k, _ in QUESTION_KINDS})
        if unknown_kinds:
            raise ValueError(f"kinds: unknown {unknown_kinds}; known: {[k for k, _ in QUESTION_KINDS]}")
        if self.seed < 0 or self.questions_per_figure < 0:
            raise ValueError("seed and questions_per_figure must be >= 0")


@dataclass
class SciFigFigure:
    """One rendered figure with its ground truth; ``meta`` holds the drawn content (the render spec and texts)."""

    id: str
    split: str
    figure_type: str
    caption: str
    ocr_text: str
    mentions: list[str]
    image: Image.Image
    meta: dict[str, Any]
    paragraphs: list[str] = field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        """The SciCap-style record written to ``scicap/<split>.jsonl``."""
        return {"id": self.id, "image": f"images/{self.id}.png", "figure_type": self.figure_type,
                "caption": self.caption, "ocr_text": self.ocr_text, "mentions": list(self.mentions),
                "paragraphs": list(self.paragraphs)}  # fmt: skip


def figure_rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    """The generator for one figure: stream 0 draws the figure, stream 1 its questions."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index, stream])


def _render() -> Any:
    """The drawing module (and the vocabulary of what can be drawn), imported on first use: it needs matplotlib."""
    try:
        from scitune.sources.scifig import render as scifig_render
    except ImportError as e:  # matplotlib is an optional dependency
        raise ImportError("SciFig rendering needs matplotlib: pip install 'scitune[eval]'") from e
    return scifig_render


def make_figure(
    seed: int, index: int, split: str, figure_type: str | None = None, image_size: int = 224
) -> SciFigFigure:
    """Sample, draw and describe figure ``index`` of ``split``; the result depends only on the arguments.

    Args:
        seed: base seed of the dataset.
        index: position of the figure in its split.
        split: split name (any string; ``train``/``val``/``test`` in generated datasets).
        figure_type: one of `FIGURE_TYPES`; default ``FIGURE_TYPES[index % 5]``.
        image_size: side of the square image in pixels.
    """
    scifig_render = _render()
    figure_type = figure_type or FIGURE_TYPES[index % len(FIGURE_TYPES)]
    if figure_type not in FIGURE_TYPES:
        raise ValueError(f"figure_type {figure_type!r} is not one of {list(FIGURE_TYPES)}")
    rng = figure_rng(seed, split, index)
    spec = scifig_render.SAMPLERS[figure_type](rng)
    image, items, found = scifig_render.render(spec, image_size)
    caption, mentions, lead = describe(spec, rng)
    meta = {**spec, "seed": seed, "index": index, "text_items": [list(it) for it in items], "canvas_texts": found}
    return SciFigFigure(id=f"scifig-{split}-{index:06d}", split=split, figure_type=figure_type, caption=caption,
                        ocr_text=" ".join(o for _, o in items), mentions=mentions, image=image, meta=meta,
                        paragraphs=[" ".join([lead, *mentions])])  # fmt: skip


class _Questions(list):
    """Question candidates (correct answer first, distractors drawn from a pool) for one figure."""

    def __init__(self, rng: np.random.Generator, category: str, fixed: bool = False) -> None:
        super().__init__()
        self.rng, self.category, self.fixed = rng, category, fixed

    def add(self, question: str, correct: str, pool: Any, solution: str, skill: str, category: str = "") -> None:
        if not solution.rstrip(".").endswith(correct):  # every solution ends by naming the answer, as ScienceQA's
            solution = f"{solution} So, the answer is {correct}."
        others = [p for p in pool if p != correct]
        k = min(4 if len(pool) == 5 else 3, len(others))  # at most 5 choices, as ScienceQA
        wrong = [others[int(i)] for i in self.rng.permutation(len(others))[:k]]
        rank = [list(pool).index(c) for c in (correct, *wrong)]  # each choice's place in the pool (fixed order)
        self.append({"question": question, "correct": correct, "wrong": wrong, "solution": solution,
                     "category": category or self.category, "skill": skill, "rank": rank})  # fmt: skip

    def count(self, question: str, n: int, solution: str) -> None:
        start = max(1, n - int(self.rng.integers(0, 4)))  # 4 counts around the answer
        if self.fixed:  # the kind's whole range instead: the choices say nothing of the answer
            start = _COUNT_LOWEST[question_kind(question)]
        self.add(question, str(n), [str(v) for v in range(start, start + 4)], solution, "Count objects in a figure")


_COUNT_LOWEST = {"count-curves": 1, "count-groups": 1, "count-bars": 3, "count-nodes": 4, "count-equations": 1}
"""The smallest count `render` draws of each kind (each kind's counts span at most 4 values)."""
_CATEGORY = {"Graph Plot": "Reading line graphs", "Scatterplot": "Reading scatterplots",
             "Node Diagram": "Reading diagrams", "Equation": "Reading equations",
             "Bar Chart": "Reading bar charts"}  # fmt: skip


def _image_questions(s: dict[str, Any], rng: np.random.Generator, fixed: bool = False) -> _Questions:
    """Every question kind the figure supports; each needs the image to answer."""
    t, v = s["type"], _render()  # v: the drawing vocabulary (trends, colors, equations ...)
    qs = _Questions(rng, _CATEGORY[t], fixed)
    sol = f"The figure {_EVIDENCE[t]}. So, its type is {t}."
    qs.add("Which type of figure is shown?", t, FIGURE_TYPES, sol, "Identify figure types", "Figure types")
    span = s["y_lim"][1] - s["y_lim"][0] if "y_lim" in s else 1.0
    if t == "Graph Plot":
        se = _pick(rng, s["series"])
        which = "the plotted curve" if len(s["series"]) == 1 else f"the curve labelled {se['name']}"
        y0, y1, top = (_fmt(v, span) for v in (se["y"][0], se["y"][-1], max(se["y"])))
        path = f"rises to about {top} and then falls to about {y1}" if se["trend"] == v.TRENDS[2] else f"ends at {y1}"
        sol = f"Follow {which} ({se['color']}) from left to right: it starts near {y0} and {path}."
        qs.add(f"Which trend does {which} show?", se["trend"], v.TRENDS, sol, "Read a line graph")
        qs.count(
            "How many curves are plotted?",
            len(s["series"]),
            f"The plot area shows {len(s['series'])} {_plural('line', len(s['series']))}.",
        )
        if s["legend"]:
            sol = f"The legend shows {_article(se['color'])} {se['color']} line next to {se['name']}."
            qs.add(f"What color is the curve labelled {se['name']}?", se["color"], v.COLOR_NAMES, sol, "Read a legend")
    elif t == "Scatterplot":
        corr, way = s["correlation"], {"positive": "go up", "negative": "go down"}.get(s["correlation"])
        sol = f"The points tend to {way} from left to right." if way else "The points show no upward or downward trend."
        pool = [f"{c} correlation" for c in v.CORRELATIONS]
        qs.add("Which kind of correlation do the plotted points show?", f"{corr} correlation", pool, sol, "Read a plot")
        if s["legend"]:
            g = _pick(rng, s["groups"])
            sol = f"The legend shows {g['color']} markers next to {g['name']}."
            qs.add(f"What color are the points labelled {g['name']}?", g["color"], v.COLOR_NAMES, sol, "Read a legend")
            sol = f"The legend lists {_join(s['names'])}."
            qs.count("How many groups of points does the legend list?", len(s["groups"]), sol)
    elif t == "Bar Chart":
        names, h = s["names"], s["heights"]
        for word, k in (("tallest", int(np.argmax(h))), ("shortest", int(np.argmin(h)))):
            most = "highest" if word == "tallest" else "lowest"
            sol = f"The bar for {names[k]} reaches {_fmt(h[k], span)}, the {most} value."
            qs.add(f"Which bar is the {word}?", names[k], names, sol, "Read a bar chart")
        qs.count("How many bars are shown?", len(h), f"There is one bar for each of {_join(names)}.")
        k = int(rng.integers(len(names)))
        q = "What color are the bars?" if s["single_color"] else f"What color is the bar for {names[k]}?"
        sol = f"All bars are {s['colors'][k]}." if s["single_color"] else f"The bar for {names[k]} is {s['colors'][k]}."
        qs.add(q, s["colors"][k], v.COLOR_NAMES, sol, "Read a bar chart")
    else:
        _diagram_questions(s, rng, qs, v)
    return qs


def _diagram_questions(s: dict[str, Any], rng: np.random.Generator, qs: _Questions, v: Any) -> None:
    """The node-diagram and equation part of `_image_questions`."""
    if s["type"] == "Node Diagram":
        labels = [nd["label"] for nd in s["nodes"]]
        deg = max(nd["degree"] for nd in s["nodes"])
        qs.count("How many nodes are in the diagram?", len(labels), f"The diagram shows the nodes {_join(labels)}.")
        sol = f"{s['hub']} has {deg} arrows starting or ending at it, more than any other node."
        qs.add("Which node has the most connections?", s["hub"], labels, sol, "Read a node diagram")
        outs = {a: [b for a2, b in s["edges"] if a2 == a] for a in labels}
        single = [a for a in labels if len(outs[a]) == 1]
        if single:
            a = _pick(rng, single)
            b, pool = outs[a][0], [x for x in labels if x != a]
            sol = f"Exactly one arrow leaves {a}, and it points to {b}."
            qs.add(f"Which node does the arrow from {a} point to?", b, pool, sol, "Read a node diagram")
    else:
        eqs = s["equations"]
        n = len(eqs)
        sol = f"The equations are numbered (1) to ({n})." if n > 1 else "Only equation (1) is shown."
        qs.count("How many numbered equations are shown?", n, sol)
        k = int(rng.integers(n))
        e, which = eqs[k], "the equation" if n == 1 else f"equation ({k + 1})"
        sol = f"{which[0].upper()}{which[1:]} reads {e['text']}"
        qs.add(f"Which quantity is on the left-hand side of {which}?", e["lhs"], v.LHS, sol + ".", "Read an equation")
        if e["function"]:
            sol += f", which uses the {e['function']} function."
            qs.add(f"Which function appears in {which}?", e["function"], v.FUNCTIONS, sol, "Read an equation")


def _text_question(s: dict[str, Any], rng: np.random.Generator) -> tuple[str, dict[str, Any]] | None:
    """A question whose data is given in the hint instead of the image, or None if the figure has none to give."""
    t, qs, skill = s["type"], _Questions(rng, "Reading data in text"), "Compare values given in text"
    v = _render()
    facts: list[tuple[str, float]] = []
    if t == "Graph Plot" and len(s["series"]) > 1:
        facts = [(se["name"], se["y"][-1]) for se in s["series"]]
        what = f"{_var(s['y_label'])} at {_var(s['x_label'])} {s['x_lim'][1]:g}"
    elif t == "Scatterplot" and len(s["groups"]) > 1:
        facts, what = [(g["name"], g["mean_y"]) for g in s["groups"]], f"average {_var(s['y_label'])}"
    elif t == "Bar Chart":
        facts, what = list(zip(s["names"], s["heights"])), _var(s["y_label"])
    if facts:
        span = s["y_lim"][1] - s["y_lim"][0]
        best = max(facts, key=lambda f: f[1])[0]
        hint = f"The {what} of each {s['domain']['entity']}: " + ", ".join(
            f"{name} {_fmt(val, span)}" for name, val in facts
        )
        sol = f"Compare the numbers: {best} has the largest value."
        qs.add(f"Which {s['domain']['entity']} has the highest {what}?", best, [n for n, _ in facts], sol, skill)
        return hint + ".", qs[0]
    if t == "Node Diagram":
        hint = f"In a {s['kind']}, arrows go " + "; ".join(f"from {a} to {b}" for a, b in s["edges"]) + "."
        sol = f"Count the arrows that start or end at each {s['noun']}: {s['hub']} has the most."
        labels = [nd["label"] for nd in s["nodes"]]
        qs.add(f"Which {s['noun']} has the most connections?", s["hub"], labels, sol, skill)
        return hint, qs[0]
    if t == "Equation":
        eqs = s["equations"]
        k = int(rng.integers(len(eqs)))
        hint = " ".join(f"Equation ({i + 1}) is {e['text']}." for i, e in enumerate(eqs))
        sol = f"Equation ({k + 1}) is {eqs[k]['text']}."
        qs.add(f"Which quantity is on the left-hand side of equation ({k + 1})?", eqs[k]["lhs"], v.LHS, sol, skill)
        return hint, qs[0]
    return None


def _no_context_question(s: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """A figure-choice question about the figure's data, answerable from general knowledge (no image, no hint)."""
    t = s["type"]
    if t in ("Graph Plot", "Scatterplot", "Bar Chart"):
        y, x, ent = _var(s["y_label"]), _var(s["x_label"]), _plural(s["domain"]["entity"])
    use = {
        "Graph Plot": lambda: f"showing how {y} changes with {x}",
        "Scatterplot": lambda: f"showing whether {y} is related to {x} across many separate measurements",
        "Bar Chart": lambda: f"comparing the {y} of a few {ent}",
        "Node Diagram": lambda: f"showing how the {_plural(s['noun'])} of a {s['kind']} are connected",
        "Equation": lambda: f"presenting a formula such as {_the(s['equations'][0]['name'])}",
    }[t]()
    qs = _Questions(rng, "Figure types")
    sol = f"A figure of type {t} {_EVIDENCE[t]}; such a figure is best for {use}."
    qs.add(f"Which type of figure is best for {use}?", t, FIGURE_TYPES, sol, "Choose a figure type")
    return qs[0]


def make_questions(
    figure: SciFigFigure, n: int = 1, kinds: tuple[str, ...] = (), fixed_choices: bool = False
) -> dict[str, dict[str, Any]]:
    """ScienceQA-schema problems (pid -> problem) about ``figure``, seeded by its (seed, split, index).

    Args:
        figure: a figure from `make_figure`.
        n: image questions (pids ``<id>-q<j>``) of distinct kinds, fewer if the figure supports fewer. Figures with
            index % 7 == 3 also get a text-context question (``<id>-txt``: image None, data in the hint) and those
            with index % 7 == 6 a no-context one (``<id>-no``: image None, hint "").
        kinds: ask only image questions of these kinds (empty = any kind).
        fixed_choices: list the choices in a fixed order (`SciFigConfig.fixed_choices`) instead of shuffled.
    """
    s, split, index = figure.meta, figure.split, figure.meta["index"]
    rng = figure_rng(figure.meta["seed"], split, index, stream=1)
    candidates = _image_questions(s, rng, fixed_choices)
    if kinds:
        candidates = [q for q in candidates if question_kind(q["question"]) in kinds]
    picks = rng.choice(len(candidates), size=min(n, len(candidates)), replace=False)
    chosen = [(f"{figure.id}-q{j}", candidates[int(i)], "", True) for j, i in enumerate(picks)]
    if index % _TXT_EVERY in (_TXT_AT, _NO_AT):
        txt = _text_question(s, rng) if index % _TXT_EVERY == _TXT_AT else None
        hint, q = txt if txt else ("", _no_context_question(s, rng))
        chosen.append((f"{figure.id}-{'txt' if hint else 'no'}", q, hint, False))
    out = {}
    for pid, q, hint, with_image in chosen:
        choices = [q["correct"], *q["wrong"]]
        order = [int(i) for i in rng.permutation(len(choices))]  # drawn either way: the later draws stay the same
        if fixed_choices:
            order = sorted(range(len(choices)), key=lambda i: q["rank"][i])
        grade = int(rng.integers(_GRADES[q["category"]][0], _GRADES[q["category"]][1] + 1))
        practice = q["category"] in ("Figure types", "Reading equations")
        subj, top = _PRACTICES if practice else (s["subject"], s["topic"])
        out[pid] = {"question": q["question"], "choices": [choices[i] for i in order], "answer": order.index(0),
                    "hint": hint, "image": "image.png" if with_image else None, "task": "closed choice",
                    "grade": f"grade{grade}", "subject": subj, "topic": top, "category": q["category"],
                    "skill": q["skill"], "lecture": LECTURES[q["category"]], "solution": q["solution"],
                    "split": split}  # fmt: skip
    return out


def generate_scifig(
    out_dir: str | os.PathLike[str], config: SciFigConfig | None = None, progress: bool = True, workers: int = 1
) -> dict:
    """Render the dataset under ``out_dir`` and return its manifest; do nothing if a manifest with this config exists.

    Layout: ``images/<id>.png``; ``scicap/<split>.jsonl`` (SciCap-style records); ``scienceqa/problems.json``,
    ``scienceqa/pid_splits.json`` and ``scienceqa/images/<pid>/image.png`` (ScienceQA's layout, hard links);
    ``manifest.json`` (written last, so an interrupted run is redone): ``config``, ``counts`` and ``type_counts`` per
    split, ``problems`` per split and ``problem_contexts``. Files left by an earlier, larger config are not deleted.

    Args:
        out_dir: output folder (created if needed).
        config: what to generate; default `SciFigConfig()`.
        progress: show a tqdm progress bar.
        workers: rendering processes; the files are the same for any number (each figure depends on its
            (seed, split, index) alone).
    """
    from scitune.sources.scifig.dataset import write_scifig

    return write_scifig(out_dir, config or SciFigConfig(), progress, workers)
