"""SciFig drawing: sample what a figure shows as a plain JSON-able spec, and draw the spec on a reused Agg canvas.

Only `scitune.sources.scifig` imports this module, lazily, so matplotlib is needed only when figures are rendered.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg chosen explicitly: no pyplot, no display
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle
from matplotlib.text import Text
from PIL import Image

Spec = dict[str, Any]
TextItem = tuple[str, str]  # (string given to matplotlib, what a reader sees); they differ only for mathtext

COLOR_NAMES: tuple[str, ...] = ("blue", "orange", "green", "red", "purple", "brown")
TRENDS: tuple[str, ...] = ("increasing", "decreasing", "rises then falls")
CORRELATIONS: tuple[str, ...] = ("positive", "negative", "no clear")
FUNCTIONS: tuple[str, ...] = ("sine", "cosine", "exponential", "logarithm", "square root")
EQUATIONS = (  # (name, left-hand side, function or None, latex format, plain format); {a}, {b} are integers
    ("quadratic polynomial", "y", None, r"$y = {a}x^2 + {b}x + 1$", "y = {a}x^2 + {b}x + 1"),
    ("exponential decay", "N(t)", "exponential", r"$N(t) = N_0\, e^{{-{a}t}}$", "N(t) = N_0 e^(-{a}t)"),
    ("sine wave", "f(x)", "sine", r"$f(x) = {a}\sin({b}x)$", "f(x) = {a} sin({b}x)"),
    ("cosine response", "h(θ)", "cosine", r"$h(\theta) = {a}\cos(\theta) + {b}$", "h(θ) = {a} cos(θ) + {b}"),
    ("Boltzmann entropy", "S", "logarithm", r"$S = k_B \ln W$", "S = k_B ln W"),
    ("free-fall speed", "v", "square root", r"$v = \sqrt{{2gh}}$", "v = sqrt(2gh)"),
    ("Newton's second law", "F", None, r"$F = m a$", "F = m a"),
    ("mass-energy equivalence", "E", None, r"$E = m c^2$", "E = m c^2"),
    ("squared-error loss", "L", None, r"$L = \sum_{{i=1}}^{{n}} (y_i - \hat{{y}}_i)^2$",
     "L = Σ_{{i=1}}^{{n}} (y_i - ŷ_i)^2"),
    ("logistic function", "σ(z)", "exponential", r"$\sigma(z) = 1 / (1 + e^{{-{a}z}})$",
     "σ(z) = 1 / (1 + e^(-{a}z))"),
)  # fmt: skip
LHS: tuple[str, ...] = tuple(e[1] for e in EQUATIONS)
COLORS: dict[str, str] = dict(zip(COLOR_NAMES, ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")))
NAT, SOC, LAN = "natural science", "social science", "language science"
_RC = {"font.family": "DejaVu Sans", "mathtext.fontset": "dejavusans", "text.usetex": False, "font.size": 7,
       "axes.labelsize": 7, "axes.titlesize": 7, "xtick.labelsize": 6, "ytick.labelsize": 6, "axes.linewidth": 0.8,
       "lines.linewidth": 1.5, "axes.titley": 1.0, "axes.titlepad": 3.0}  # fmt: skip
# axes.titley fixed: automatic title placement measures every tick label, which is slow.


class Domain(NamedTuple):
    """What a plot is about: axis labels, value ranges, the kind and names of its series or categories."""

    x: str
    y: str
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    entity: str
    names: tuple[str, ...]
    subject: str
    topic: str


GRAPH_DOMAINS = (
    Domain("Epoch", "Accuracy", (0, 40), (0, 1), "model", ("ResNet", "ViT", "MLP", "LSTM"), NAT, "computing"),
    Domain("Time (s)", "Temperature (K)", (0, 100), (250, 350), "sample", ("Sample A", "Sample B", "Sample C"),
           NAT, "physics"),
    Domain("Time (min)", "Concentration (mM)", (0, 60), (0, 8), "substance", ("Glucose", "Lactate", "Urea"),
           NAT, "chemistry"),
    Domain("Year", "Price (USD)", (2000, 2020), (0, 400), "crop", ("Wheat", "Corn", "Rice", "Soy"), SOC, "economics"),
    Domain("Year", "Population (M)", (1980, 2020), (0, 80), "country", ("Kenya", "Peru", "Chile", "Nepal"),
           SOC, "geography"),
    Domain("Age (months)", "Vocabulary size", (12, 36), (0, 800), "group", ("Group A", "Group B", "Group C"),
           LAN, "vocabulary"),
)  # fmt: skip
SCATTER_DOMAINS = (
    Domain("Height (cm)", "Mass (kg)", (140, 200), (40, 100), "species", ("Species A", "Species B", "Species C"),
           NAT, "biology"),
    Domain("Temperature (°C)", "Reaction rate", (0, 80), (0, 4), "condition", ("Catalyst", "Control", "Enzyme"),
           NAT, "chemistry"),
    Domain("Income (k$)", "Life expectancy", (0, 60), (40, 80), "region", ("Africa", "Asia", "Europe"),
           SOC, "economics"),
    Domain("Word length", "Reading time (ms)", (2, 14), (200, 600), "word class", ("Nouns", "Verbs", "Adjectives"),
           LAN, "word-study"),
)  # fmt: skip
BAR_DOMAINS = (
    Domain("Species", "Count", (0, 0), (0, 40), "species", ("Oak", "Pine", "Elm", "Birch", "Maple", "Ash"),
           NAT, "biology"),
    Domain("Method", "F1 score", (0, 0), (0, 1), "method", ("Ours", "BERT", "SVM", "CRF", "LSTM", "GPT"),
           NAT, "computing"),
    Domain("Element", "Abundance (%)", (0, 0), (0, 60), "element", ("C", "H", "O", "N", "S", "P"), NAT, "chemistry"),
    Domain("Country", "GDP (T$)", (0, 0), (0, 8), "country", ("Brazil", "India", "Japan", "Kenya", "Spain"),
           SOC, "economics"),
    Domain("Word class", "Count", (0, 0), (0, 200), "word class", ("noun", "verb", "adverb", "pronoun", "article"),
           LAN, "grammar"),
)  # fmt: skip
NODE_DOMAINS = (  # (noun for a node, labels, subject, topic, diagram name)
    ("node", ("A", "B", "C", "D", "E", "F", "G"), NAT, "computing", "directed graph"),
    ("state", ("S0", "S1", "S2", "S3", "S4", "S5", "S6"), NAT, "computing", "state diagram"),
    ("stage", ("Input", "Encoder", "Decoder", "Output", "Loss", "Pooling", "Softmax"), NAT, "computing", "pipeline"),
    ("country", ("Brazil", "China", "Egypt", "France", "India", "Japan", "Mexico"), SOC, "economics", "trade network"),
)
_CANVAS: dict[int, Any] = {}  # image size -> _Canvas


def _pick(rng: np.random.Generator, seq: Any, k: int | None = None) -> Any:
    """One element of ``seq`` (k=None) or a list of k distinct ones, as plain Python values."""
    if k is None:
        return seq[int(rng.integers(len(seq)))]
    return [seq[int(i)] for i in rng.choice(len(seq), size=k, replace=False)]


def _ticks(lo: float, hi: float, n: int = 5) -> tuple[list[float], list[str]]:
    vals = [float(v) for v in np.linspace(lo, hi, n)]
    return vals, [f"{v:g}" for v in vals]


def _scale(v: np.ndarray, rng_: tuple[float, float]) -> list[float]:
    lo, hi = rng_
    return [round(float(lo + x * (hi - lo)), 4) for x in v]


def _axes_spec(rng: np.random.Generator, d: Domain, ftype: str, names: list[str], colors: list[str]) -> Spec:
    """Fields shared by the plots with axes: labels, ticks, legend, title and frame style."""
    x_ticks, x_labels = _ticks(*d.x_range)
    y_ticks, y_labels = _ticks(*d.y_range, n=int(rng.choice([3, 5])))
    legend = len(names) > 1 or bool(rng.random() < 0.3)
    title = f"{d.y} vs. {d.x.split(' (')[0].lower()}" if rng.random() < 0.3 else ""
    box = rng.random() < {"Graph Plot": 0.1, "Scatterplot": 0.9}.get(ftype, 0.4)
    # Framing differs by type (open axes for line plots, boxed scatterplots), as in many papers: by content alone,
    # lines and point clouds blur together once figures are shrunk to 32x32.
    return {"type": ftype, "domain": d._asdict(), "subject": d.subject, "topic": d.topic, "x_label": d.x,
            "y_label": d.y, "x_lim": list(d.x_range), "y_lim": list(d.y_range), "x_ticks": x_ticks,
            "x_ticklabels": x_labels, "y_ticks": y_ticks, "y_ticklabels": y_labels, "title": title, "legend": legend,
            "legend_loc": _pick(rng, ["upper left", "upper right", "lower right", "center right", "above"]),
            "grid": bool(rng.random() < 0.3), "box": bool(box), "names": names, "colors": colors}  # fmt: skip


def _curve(rng: np.random.Generator, trend: str, end: float, t: np.ndarray) -> np.ndarray:
    """A noisy normalized curve in [0, 1] with the given trend that finishes near ``end``."""
    if trend == "increasing":
        start = rng.uniform(0.05, end - 0.3)
    elif trend == "decreasing":
        start = rng.uniform(end + 0.3, 0.95)
    else:
        start = rng.uniform(0.05, 0.4)
    k = rng.uniform(2.0, 6.0)
    g = _pick(rng, [t, (1 - np.exp(-k * t)) / (1 - np.exp(-k)), t**2])
    if trend == "rises then falls":
        peak, tp = rng.uniform(max(start, end) + 0.3, 0.97), rng.uniform(0.35, 0.65)
        up = start + (peak - start) * np.sin(np.pi / 2 * np.minimum(t / tp, 1))
        y = np.where(t <= tp, up, peak - (peak - end) * np.sin(np.pi / 2 * (t - tp) / (1 - tp)))
    else:
        y = start + (end - start) * g
    return np.clip(y + rng.normal(0, 0.012, t.shape), 0.01, 0.99)


def sample_graph(rng: np.random.Generator) -> Spec:
    """Sample a line plot: 1-3 series, each increasing, decreasing or rising then falling, ending apart."""
    d = _pick(rng, GRAPH_DOMAINS)
    n = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
    spec = _axes_spec(rng, d, "Graph Plot", _pick(rng, d.names, n), _pick(rng, list(COLORS), n))
    t = np.linspace(0, 1, int(rng.integers(15, 40)))
    used: set[float] = set()
    series = []
    for name, color in zip(spec["names"], spec["colors"]):
        trend = _pick(rng, TRENDS)
        levels = [v for v in np.arange(1, 10) / 10 if (v >= 0.4 if trend == "increasing" else v <= 0.6)]
        end = _pick(rng, [v for v in levels if v not in used])  # ends >= 0.1 apart: a unique last-value leader
        used.add(end)
        y = _curve(rng, trend, end, t)
        style = _pick(rng, ["-", "--", "-."]) if n > 1 else "-"
        xs, ys = _scale(t, d.x_range), _scale(y, d.y_range)
        series.append({"name": name, "color": color, "trend": trend, "x": xs, "y": ys, "style": style})
    spec.update(series=series, marker=_pick(rng, ["", "", "o", "s"]))
    return spec


def sample_scatter(rng: np.random.Generator) -> Spec:
    """Sample a scatterplot: 1-3 groups of points sharing a positive, negative or no clear correlation."""
    d = _pick(rng, SCATTER_DOMAINS)
    n = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
    spec = _axes_spec(rng, d, "Scatterplot", _pick(rng, d.names, n), _pick(rng, list(COLORS), n))
    corr = _pick(rng, CORRELATIONS)
    offsets = _pick(rng, [-0.14, 0.0, 0.14], n)  # distinct group levels: a unique highest-mean group
    groups = []
    for name, color, off in zip(spec["names"], spec["colors"], offsets):
        for _ in range(50):  # resample until the drawn points show the intended correlation clearly
            x = rng.uniform(0.05, 0.95, int(rng.integers(30, 60)))
            y = 0.5 + off + (0.65 if corr == "positive" else -0.65) * (x - 0.5) + rng.normal(0, 0.06, x.shape)
            if corr == "no clear":
                y = rng.uniform(0.3, 0.7, x.shape) + off
            y = np.clip(y, 0.02, 0.98)
            r = float(np.corrcoef(x, y)[0, 1])
            if (abs(r) < 0.2) if corr == "no clear" else (abs(r) > 0.7):
                break
        g = {"name": name, "color": color, "x": _scale(x, d.x_range), "y": _scale(y, d.y_range)}
        groups.append(
            {**g, "marker": _pick(rng, ["o", "s", "^"]), "mean_y": _scale(np.array([y.mean()]), d.y_range)[0]}
        )
    spec.update(groups=groups, correlation=corr, marker_size=float(rng.uniform(18, 36)))
    return spec


def sample_bar(rng: np.random.Generator) -> Spec:
    """Sample a bar chart of 3-6 categories with distinct heights (a unique tallest and shortest bar)."""
    d = _pick(rng, BAR_DOMAINS)
    n = int(rng.integers(3, min(6, len(d.names)) + 1))
    single = bool(rng.random() < 0.6)
    colors = [_pick(rng, list(COLORS))] * n if single else _pick(rng, list(COLORS), n)
    spec = _axes_spec(rng, d, "Bar Chart", _pick(rng, d.names, n), colors)
    span = d.y_range[1] - d.y_range[0]
    digits = 2 if span <= 1 else (1 if span <= 10 else 0)
    levels = _pick(rng, list(np.linspace(0.12, 0.86, 12)), n)
    heights = [round(float(d.y_range[0] + v * span), digits) for v in levels]
    heights = [int(h) if digits == 0 else h for h in heights]
    spec.update(x_lim=[-0.6, n - 0.4], x_ticks=list(range(n)), x_ticklabels=spec["names"], heights=heights,
                single_color=single, value_labels=bool(rng.random() < 0.3), legend=False, rotate=n > 4)  # fmt: skip
    return spec


def sample_nodes(rng: np.random.Generator) -> Spec:
    """Sample a node diagram: 4-7 labelled nodes, arrows between them, and a unique best-connected node."""
    noun, labels, subject, topic, kind = _pick(rng, NODE_DOMAINS)
    n = int(rng.integers(4, 8))
    names = _pick(rng, labels, n)
    layered = bool(rng.random() < 0.5)
    for _ in range(100):  # resample edges until one node has strictly the most connections
        if layered:  # 2-4 layers of 1-3 nodes, drawn top to bottom
            cuts = sorted(_pick(rng, list(range(1, n)), int(rng.integers(max(1, (n - 1) // 3), min(3, n - 1) + 1))))
            layers = [list(range(a, b)) for a, b in zip([0, *cuts], [*cuts, n])]
            if max(map(len, layers)) > 3:
                continue
            edges = {(_pick(rng, layers[k - 1]), i) for k in range(1, len(layers)) for i in layers[k]}
            edges |= {(i, _pick(rng, layers[1])) for i in layers[0] if not any(e[0] == i for e in edges)}  # no orphans
            dy = 0.7 / max(1, len(layers) - 1)
            pos = {
                i: (0.5 + (j - (len(ly) - 1) / 2) * 0.3, 0.85 - k * dy)
                for k, ly in enumerate(layers)
                for j, i in enumerate(ly)
            }
        else:  # a ring layout with a random spanning tree
            edges = {(int(rng.integers(i)), i) for i in range(1, n)}
            ang = np.pi / 2 - 2 * np.pi * np.arange(n) / n
            pos = {i: (0.5 + 0.36 * np.cos(a), 0.5 + 0.36 * np.sin(a)) for i, a in enumerate(ang)}
        for _ in range(int(rng.integers(0, 3))):
            a, b = sorted(_pick(rng, list(range(n)), 2))
            if (a, b) not in edges and (not layered or pos[a][1] > pos[b][1]):
                edges.add((a, b))
        degree = [sum(i in e for e in edges) for i in range(n)]
        if sorted(degree)[-1] > sorted(degree)[-2]:
            break
    nodes = [{"label": names[i], "x": round(float(pos[i][0]), 4), "y": round(float(pos[i][1]), 4),
              "degree": degree[i]} for i in range(n)]  # fmt: skip
    return {"type": "Node Diagram", "noun": noun, "kind": kind, "subject": subject, "topic": topic, "nodes": nodes,
            "edges": [[names[a], names[b]] for a, b in sorted(edges)], "hub": names[int(np.argmax(degree))],
            "shape": "circle" if max(map(len, names)) <= 2 else "box",
            "fill": _pick(rng, ["#dbe9f6", "#fde2c8", "#d8f0d2", "#ffffff"])}  # fmt: skip


def sample_equations(rng: np.random.Generator) -> Spec:
    """Sample 1-3 distinct numbered equations with random integer coefficients."""
    eqs = []
    for name, lhs, func, latex, plain in _pick(rng, EQUATIONS, int(rng.integers(1, 4))):
        a, b = int(rng.integers(2, 10)), int(rng.integers(2, 10))
        eqs.append({"name": name, "lhs": lhs, "function": func, "latex": latex.format(a=a, b=b),
                    "text": plain.format(a=a, b=b)})  # fmt: skip
    return {"type": "Equation", "equations": eqs, "fontsize": float(rng.uniform(10, 13)), "subject": NAT,
            "topic": "science-and-engineering-practices"}  # fmt: skip


SAMPLERS = {"Graph Plot": sample_graph, "Scatterplot": sample_scatter, "Node Diagram": sample_nodes,
            "Equation": sample_equations, "Bar Chart": sample_bar}  # fmt: skip


class _Canvas:
    """A reused figure with one axes for plots and one blank axes; building axes and ticks dominates small renders."""

    def __init__(self, image_size: int) -> None:
        self.fig = Figure(figsize=(2.24, 2.24), dpi=image_size / 2.24, facecolor="white")  # same layout at any size
        self.canvas = FigureCanvasAgg(self.fig)
        self.plot = self.fig.add_axes((0.2, 0.17, 0.74, 0.73))
        self.plot.set_axisbelow(True)
        self.blank = self.fig.add_axes((0.02, 0.02, 0.96, 0.96))
        self.blank.set_axis_off()
        self.blank.set_xlim(0, 1)
        self.blank.set_ylim(0, 1)

    def reset(self) -> None:
        """Remove everything the previous figure drew, so each render depends on its spec alone."""
        for ax in (self.plot, self.blank):
            for c in list(ax.containers):  # a container removes its own patches
                c.remove()
            for a in [*ax.lines, *ax.collections, *ax.patches, *ax.texts]:
                a.remove()
            ax.set_visible(False)
        self.plot.set_title("")
        self.plot.grid(False)


def _frame(h: _Canvas, s: Spec, extra: list[TextItem]) -> tuple[Any, list[TextItem]]:
    """Axes with the spec's ticks, labels, title and grid; returns it and the text items in reading order."""
    bottom = 0.24 if s.get("rotate") else 0.17
    top = 0.9 if s["title"] or s["legend_loc"] == "above" else 0.95
    ax = h.plot
    ax.set_visible(True)
    ax.set_position((0.2, bottom, 0.74, top - bottom))
    ax.set_xlim(*s["x_lim"])
    ax.set_ylim(*s["y_lim"])
    ax.set_xticks(s["x_ticks"], s["x_ticklabels"])
    ax.set_yticks(s["y_ticks"], s["y_ticklabels"])
    ax.set_xlabel(s["x_label"])
    ax.set_ylabel(s["y_label"])
    # Fixed label offsets (points -> axes fraction): matplotlib's own placement measures every tick label, slowly.
    x_pt = 24 if s.get("rotate") else 13
    y_pt = 6 + 3.8 * max(len(t) for t in s["y_ticklabels"])
    ax.xaxis.set_label_coords(0.5, -x_pt / 72 / ((top - bottom) * 2.24))
    ax.yaxis.set_label_coords(-y_pt / 72 / (0.74 * 2.24), 0.5)
    ax.tick_params(length=2.5, pad=1.5)
    ax.tick_params(axis="x", labelrotation=30 if s.get("rotate") else 0)
    for side in ("top", "right"):
        ax.spines[side].set_visible(s["box"])
    if s["grid"]:
        ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.set_title(s["title"])
    legend = [str(h) for h in s["names"]] if s["legend"] else []
    y_ticks = list(reversed(s["y_ticklabels"]))  # reading order: top to bottom
    texts = [s["title"], *legend] + [t for t, _ in extra] + [s["y_label"], *y_ticks, *s["x_ticklabels"], s["x_label"]]
    return ax, [(t, t) for t in texts if t]


def _legend(ax: Any, s: Spec, handles: list[dict[str, Any]]) -> None:
    """Draw the legend by hand (matplotlib's legend layout costs ~10 ms): one row above the axes, or a column."""
    if not s["legend"]:
        return
    n, loc = len(handles), s["legend_loc"]
    if loc == "above" and not s["title"]:
        xs, ys = [k / n + 0.02 for k in range(n)], [1.05] * n
    else:
        x0 = 0.64 if "right" in loc else 0.03
        y0 = {"lower": 0.07 + 0.075 * (n - 1), "center": 0.5 + 0.0375 * (n - 1)}.get(loc.split()[0], 0.93)
        xs, ys = [x0] * n, [y0 - 0.075 * k for k in range(n)]
        w = 0.13 + 0.03 * max(map(len, s["names"]))  # a translucent white frame keeps the entries readable over data
        box = {"transform": ax.transAxes, "zorder": 2.5, "fc": "white", "ec": "#cccccc", "lw": 0.5, "alpha": 0.85}
        ax.add_patch(Rectangle((x0 - 0.02, ys[-1] - 0.045), w, ys[0] - ys[-1] + 0.09, **box))
    for name, style, x, y in zip(s["names"], handles, xs, ys):
        xs_ = [x + 0.04] if style["linestyle"] == "none" else [x, x + 0.08]  # a marker, or a line segment
        kw = {"markersize": 3.5, **style, "transform": ax.transAxes, "clip_on": False, "zorder": 3}
        ax.plot(xs_, [y] * len(xs_), **kw)
        ax.text(x + 0.1, y, name, transform=ax.transAxes, ha="left", va="center", fontsize=6)


def _draw_graph(h: _Canvas, s: Spec) -> list[TextItem]:
    ax, items = _frame(h, s, [])
    handles = []
    for se in s["series"]:
        style = {"color": COLORS[se["color"]], "linestyle": se["style"], "marker": s["marker"] or None}
        ax.plot(se["x"], se["y"], markersize=2.5, markevery=3, **style)
        handles.append({**style, "markersize": 2.5, "markevery": [1]})
    _legend(ax, s, handles)
    return items


def _draw_scatter(h: _Canvas, s: Spec) -> list[TextItem]:
    ax, items = _frame(h, s, [])
    for g in s["groups"]:
        ax.scatter(
            g["x"], g["y"], s=s["marker_size"], color=COLORS[g["color"]], marker=g["marker"], linewidths=0, alpha=0.85
        )
    _legend(ax, s, [{"color": COLORS[g["color"]], "marker": g["marker"], "linestyle": "none"} for g in s["groups"]])
    return items


def _draw_bar(h: _Canvas, s: Spec) -> list[TextItem]:
    values = [f"{h:g}" for h in s["heights"]] if s["value_labels"] else []
    ax, items = _frame(h, s, [(v, v) for v in values])
    ax.bar(s["x_ticks"], s["heights"], width=0.62, color=[COLORS[c] for c in s["colors"]])
    span = s["y_lim"][1] - s["y_lim"][0]
    for i, v in enumerate(values):
        ax.text(i, s["heights"][i] + 0.015 * span, v, ha="center", va="bottom", fontsize=5.5)
    return items


def _draw_nodes(h: _Canvas, s: Spec) -> list[TextItem]:
    ax = h.blank
    ax.set_visible(True)
    edge = {"fc": s["fill"], "ec": "#333333", "lw": 1.0, "zorder": 2}
    half = {}  # label -> (half width, half height) of its node shape, in data units
    for nd in s["nodes"]:
        w = 0.055 if s["shape"] == "circle" else 0.0125 * len(nd["label"]) + 0.025
        half[nd["label"]] = (w, 0.055 if s["shape"] == "circle" else 0.045)
        xy = (nd["x"], nd["y"])
        if s["shape"] == "circle":
            ax.add_patch(Circle(xy, w, **edge))
        else:
            box = FancyBboxPatch((xy[0] - w, xy[1] - 0.045), 2 * w, 0.09, "round,pad=0,rounding_size=0.02", **edge)
            ax.add_patch(box)
        ax.text(*xy, nd["label"], ha="center", va="center", fontsize=7 if s["shape"] == "circle" else 6, zorder=3)
    at = {nd["label"]: np.array([nd["x"], nd["y"]]) for nd in s["nodes"]}
    for a, b in s["edges"]:
        u = (at[b] - at[a]) / np.linalg.norm(at[b] - at[a])
        ta, tb = (_exit(u, half[a], s["shape"]), _exit(u, half[b], s["shape"]))
        arrow = FancyArrowPatch(tuple(at[a] + ta * u), tuple(at[b] - (tb + 0.005) * u), arrowstyle="-|>",
                                mutation_scale=8, lw=0.9, color="#333333", shrinkA=0, shrinkB=0, zorder=1)  # fmt: skip
        ax.add_patch(arrow)
    order = sorted(s["nodes"], key=lambda nd: (-round(nd["y"], 2), nd["x"]))  # reading order
    return [(nd["label"], nd["label"]) for nd in order]


def _exit(u: np.ndarray, half: tuple[float, float], shape: str) -> float:
    """Distance from a node's centre to its border along the unit vector ``u``."""
    if shape == "circle":
        return half[0]
    return float(min(half[0] / max(abs(u[0]), 1e-9), half[1] / max(abs(u[1]), 1e-9)))


def _draw_equations(h: _Canvas, s: Spec) -> list[TextItem]:
    ax = h.blank
    ax.set_visible(True)
    n = len(s["equations"])
    items: list[TextItem] = []
    for k, eq in enumerate(s["equations"]):
        y = 0.5 + ((n - 1) / 2 - k) * 0.24
        ax.text(0.45, y, eq["latex"], ha="center", va="center", fontsize=s["fontsize"])
        ax.text(0.95, y, f"({k + 1})", ha="right", va="center", fontsize=8)
        items += [(eq["latex"], eq["text"]), (f"({k + 1})", f"({k + 1})")]
    return items


_DRAW = {"Graph Plot": _draw_graph, "Scatterplot": _draw_scatter, "Node Diagram": _draw_nodes,
         "Equation": _draw_equations, "Bar Chart": _draw_bar}  # fmt: skip


def visible_texts(fig: Figure) -> list[str]:
    """The non-empty texts drawn on visible axes that lie wholly inside the canvas (clipped ones are left out)."""
    found: list[Text] = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        if ax.axison:
            found += [ax.xaxis.label, ax.yaxis.label, *ax.xaxis.get_ticklabels(), *ax.yaxis.get_ticklabels()]
        found += [ax.title, *ax.texts]
    box = fig.bbox
    out = []
    for t in found:
        bb = t.get_window_extent()
        inside = bb.x0 >= box.x0 - 0.5 and bb.y0 >= box.y0 - 0.5 and bb.x1 <= box.x1 + 0.5 and bb.y1 <= box.y1 + 0.5
        if t.get_text() and t.get_visible() and inside:
            out.append(t.get_text())
    return out


def render(spec: Spec, image_size: int = 224) -> tuple[Image.Image, list[TextItem], list[str]]:
    """Draw ``spec``; return the RGB image, the text items in reading order and the texts found on the canvas.

    Not thread-safe: the figure for each size is reused across calls.
    """
    with matplotlib.rc_context(_RC):  # user styles must not change the pixels
        if image_size not in _CANVAS:
            _CANVAS[image_size] = _Canvas(image_size)
        h = _CANVAS[image_size]
        h.reset()
        items = _DRAW[spec["type"]](h, spec)
        h.canvas.draw()
        found = visible_texts(h.fig)
        rgba = np.asarray(h.canvas.buffer_rgba())
        image = Image.fromarray(np.ascontiguousarray(rgba[..., :3]))
    return image, items, found
