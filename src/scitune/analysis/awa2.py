"""LiMBeR's Animals-with-Attributes-2 analyses (its Figure 4a), per encoder: how many of AwA2's binary properties an
animal that a caption names by mistake shares with the true one, and the Wu-Palmer similarity of the captions that
miss the animal; box plots with the median (solid orange) and the mean (dashed green), as in the paper."""

from __future__ import annotations

import os
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scitune.io import (
    DataError,
    atomic_path,
    check_input_file,
    iter_jsonl,
    iter_text_lines,
    read_json,
    write_json,
    write_jsonl,
)

__all__ = [
    "AWA2_FILES",
    "AwA2Attributes",
    "AwA2Options",
    "class_key",
    "judge_caption",
    "load_awa2",
    "overlap_summary",
    "run_awa2",
    "write_fixture",
]

AWA2_FILES = ("classes.txt", "predicates.txt", "predicate-matrix-binary.txt")
OVERLAP_MODES = ("shared", "agree")
# irregular plurals of AwA2 animals (regular ones, +s / +es, are matched by rule)
_PLURALS = {"wolf": ["wolves"], "mouse": ["mice"], "ox": ["oxen"]}


@dataclass
class AwA2Options:
    """AwA2 property overlap of mistaken animals and Wu-Palmer similarity of captions that miss the animal."""

    awa2: str
    """AwA2 folder (Animals_with_Attributes2/) holding classes.txt, predicates.txt and predicate-matrix-binary.txt."""
    predictions: dict[str, str]
    """Encoder name -> captions JSONL ({"id", "text"} per line, plus "label" = the true AwA2 class unless --labels
    gives it), e.g. '{"BEiT": beit/predictions.jsonl, "CLIP": clip/predictions.jsonl}'."""
    out: str
    """Output folder: results.json, captions.jsonl, awa2_overlap.png and wup_missed.png."""
    overwrite: bool = False
    """Write into an --out folder that holds files scitune did not write (they are kept, never replaced)."""
    labels: str | None = None
    """JSONL records giving each id's true animal (a "label" field, or the class folder of "image":
    JPEGImages/<class>/...), e.g. the --data given to scitune eval caption."""
    overlap: str = "shared"
    """Count properties both animals have (shared) or on which they agree, both having or both lacking it (agree)."""
    aliases: str | None = None
    """JSON {class: [other names]} also taken as naming the class, e.g. {"hippopotamus": ["hippo"]}."""
    wup: bool = True
    """Also score the captions that miss the animal by Wu-Palmer similarity (needs nltk and WordNet 3.0)."""
    wordnet_dir: str | None = None
    """Folder of the WordNet 3.0 database (default: $SCITUNE_WORDNET_DIR, else /usr/share/wordnet)."""
    first_sense: bool = False
    """Wu-Palmer over each word's most frequent noun sense only."""
    ignore: list[str] = field(default_factory=list)
    """Words of the captions never taken as the generated noun, e.g. [picture, photo]."""
    text_field: str = "text"
    """Prediction field holding the caption."""
    label_field: str = "label"
    """Field holding the true class (in the predictions or the --labels records)."""

    def __post_init__(self):
        if self.overlap not in OVERLAP_MODES:
            raise ValueError(f"--overlap must be one of {', '.join(OVERLAP_MODES)}, got {self.overlap!r}")
        if not self.predictions:
            raise ValueError("--predictions needs at least one encoder: '{\"NAME\": predictions.jsonl}'")


def class_key(name: str) -> str:
    """AwA2's class spelling to plain words: ``grizzly+bear`` -> ``grizzly bear``."""
    return " ".join(re.sub(r"[+_\-]", " ", name.lower()).split())


@dataclass(frozen=True)
class AwA2Attributes:
    """AwA2's classes (released spelling), predicates and the (classes, predicates) binary matrix."""

    classes: tuple[str, ...]
    predicates: tuple[str, ...]
    matrix: np.ndarray

    def find(self, label: str) -> str | None:
        """The released class name of ``label`` (any of ``grizzly+bear``, ``grizzly bear``, ``Grizzly_Bear``)."""
        keys = {class_key(c): c for c in self.classes}
        return keys.get(class_key(label))

    def overlap(self, a: str, b: str, mode: str = "shared") -> int:
        """Properties ``a`` and ``b`` both have (``shared``) or agree on (``agree``)."""
        ra, rb = self.matrix[self.classes.index(a)], self.matrix[self.classes.index(b)]
        return int((ra & rb).sum() if mode == "shared" else (ra == rb).sum())


def _read_indexed(path: Path) -> list[str]:
    """``<1-based index><TAB or spaces><name>`` lines (AwA2's classes.txt / predicates.txt)."""
    names = []
    for lineno, line in iter_text_lines(path):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != len(names) + 1:
            raise DataError(f"{path}:{lineno}: expected '<index> <name>' with index {len(names) + 1}, got {line!r}")
        names.append(parts[1])
    if not names:
        raise DataError(f"{path}: empty")
    return names


def load_awa2(folder: str | os.PathLike[str]) -> AwA2Attributes:
    """Read AwA2's released ``classes.txt``, ``predicates.txt`` and ``predicate-matrix-binary.txt`` (one line per
    class, one 0/1 per predicate, space-separated); a wrong shape or value raises `DataError` naming file and line."""
    folder = Path(folder)
    for name in AWA2_FILES:
        check_input_file(folder / name, f"AwA2 file ({', '.join(AWA2_FILES)} expected in {folder})")
    classes, predicates = _read_indexed(folder / "classes.txt"), _read_indexed(folder / "predicates.txt")
    path = folder / "predicate-matrix-binary.txt"
    rows = []
    for lineno, line in iter_text_lines(path):
        if not line.strip():
            continue
        vals = line.split()
        if len(vals) != len(predicates) or any(v not in ("0", "1") for v in vals):
            raise DataError(f"{path}:{lineno}: expected {len(predicates)} values of 0 or 1 (one per predicate)")
        rows.append([v == "1" for v in vals])
    if len(rows) != len(classes):
        raise DataError(f"{path}: {len(rows)} rows for {len(classes)} classes in classes.txt")
    return AwA2Attributes(tuple(classes), tuple(predicates), np.array(rows, dtype=bool).reshape(len(classes), -1))


def _matcher(classes: tuple[str, ...], aliases: dict[str, list[str]]) -> tuple[re.Pattern, dict[str, str]]:
    """One regex for every class name and alias (longest first, so ``polar bear`` wins over a ``bear`` alias)."""
    names: dict[str, str] = {}
    for c in classes:
        key = class_key(c)
        for n in [key, *_PLURALS.get(key, []), *(class_key(a) for a in aliases.get(c, []))]:
            names.setdefault(n, c)
    alts = "|".join(re.escape(n).replace(r"\ ", r"\s+") for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"\b({alts})(?:e?s)?\b"), names


def judge_caption(text: str, truth: str, matcher: tuple[re.Pattern, dict[str, str]]) -> tuple[str, str | None]:
    """``("named", truth)`` when the caption names the true animal, ``("mistaken", animal)`` when it names another
    AwA2 animal (the first one named), ``("none", None)`` when it names none."""
    pattern, names = matcher
    found = [names[" ".join(m.group(1).split())] for m in pattern.finditer(class_key(text))]
    if truth in found:
        return "named", truth
    return ("mistaken", found[0]) if found else ("none", None)


def _stats(values: list[float]) -> dict[str, float | None]:
    return {"mean": statistics.fmean(values) if values else None,
            "median": float(statistics.median(values)) if values else None, "n": len(values)}  # fmt: skip


def overlap_summary(rows: list[dict[str, Any]], attrs: AwA2Attributes, mode: str) -> dict[str, Any]:
    """Per true animal, the animal it is most often mistaken for (ties: alphabetical) and their property overlap
    (LiMBeR's figure); mean and median over those animals, and over every mistaken caption."""
    mistakes: dict[str, Counter] = {}
    for r in rows:
        if r["verdict"] == "mistaken":
            mistakes.setdefault(r["label"], Counter())[r["mentioned"]] += 1
    per_class = {}
    for truth in sorted(mistakes):
        animal, times = min(mistakes[truth].items(), key=lambda kv: (-kv[1], kv[0]))
        per_class[truth] = {"mistaken_for": animal, "times": times, "overlap": attrs.overlap(truth, animal, mode)}
    counts = Counter(r["verdict"] for r in rows)
    return {
        "n": len(rows),
        "named_rate": counts["named"] / len(rows) if rows else None,
        "n_named": counts["named"],
        "n_mistaken": counts["mistaken"],
        "n_none": counts["none"],
        "overlap_most_mistaken": _stats([v["overlap"] for v in per_class.values()]),
        "overlap_every_mistake": _stats([r["overlap"] for r in rows if r["verdict"] == "mistaken"]),
        "most_mistaken": per_class,
    }


def _read_labels(path: str, label_field: str) -> dict[str, str]:
    out = {}
    for lineno, rec in iter_jsonl(path):
        lab = rec.get(label_field)
        if not isinstance(lab, str) and isinstance(rec.get("image"), str) and "/" in rec["image"]:
            lab = Path(rec["image"]).parent.name  # JPEGImages/<class>/<class>_10001.jpg
        if not isinstance(lab, str) or "id" not in rec:
            raise DataError(f"{path}:{lineno}: needs an 'id' and a {label_field!r} (or an image under <class>/)")
        out[str(rec["id"])] = lab
    return out


def _read_captions(path: str, opts: AwA2Options, labels: dict[str, str], attrs: AwA2Attributes) -> list[dict]:
    items = []
    for lineno, rec in iter_jsonl(path):
        ident = str(rec.get("id", f"line{lineno}"))
        text, lab = rec.get(opts.text_field), rec.get(opts.label_field, labels.get(ident))
        if not isinstance(text, str) or not isinstance(lab, str):
            missing = opts.text_field if not isinstance(text, str) else f"{opts.label_field} (or an id in --labels)"
            raise DataError(f"{path}:{lineno} (id {ident}): needs a string {missing}")
        truth = attrs.find(lab)
        if truth is None:
            raise DataError(f"{path}:{lineno} (id {ident}): label {lab!r} is not an AwA2 class of classes.txt")
        items.append({"id": ident, "text": text, "label": truth})
    if not items:
        raise DataError(f"{path}: no captions")
    return items


def boxplot(
    path: str | os.PathLike[str], series: dict[str, list[float]], title: str, ylabel: str, ylim: tuple[float, float]
) -> None:
    """One box per series with the median (solid orange) and the mean (dashed green), matplotlib's defaults."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(4.5, 1.6 + 1.4 * len(series)), 3.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    names = list(series)
    data = [series[n] if series[n] else [float("nan")] for n in names]
    ax.boxplot(data, showmeans=True, meanline=True)
    ax.set_xticks(range(1, len(names) + 1), [f"{n}\n(n={len(series[n])})" for n in names])
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.set_ylim(*ylim)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _wup_missed(items: list[dict], opts: AwA2Options) -> tuple[list[float], dict[str, Any]]:
    """Wu-Palmer scores of the captions that do not name the animal (WordNet: no sense of the class named)."""
    from scitune.analysis.wordnet import load_wordnet, score_items

    wn = load_wordnet(opts.wordnet_dir)
    mapping = {it["label"]: class_key(it["label"]).replace(" ", "_") for it in items}
    rows, summary = score_items(wn, items, opts.first_sense, frozenset(opts.ignore), mapping)
    missed = [r["score"] for r in rows if r["status"] in ("related", "no_noun")]
    return missed, {**_stats(missed), "wup_mean_all": summary["wup_mean"], "exact_rate": summary["exact_rate"],
                    "unknown_labels": summary["unknown_labels"]}  # fmt: skip


def run_awa2(opts: AwA2Options) -> dict[str, Any]:
    """Run both analyses for every encoder of ``opts.predictions``; write the outputs into ``opts.out``."""
    from scitune.outputs import claim_output_folder

    attrs = load_awa2(opts.awa2)
    aliases = read_json(opts.aliases) if opts.aliases else {}
    if not isinstance(aliases, dict) or not all(isinstance(v, list) for v in aliases.values()):
        raise DataError(f"{opts.aliases}: expected a JSON object {{class: [other names]}}")
    aliases = {attrs.find(k) or k: v for k, v in aliases.items()}
    matcher = _matcher(attrs.classes, aliases)
    labels = _read_labels(opts.labels, opts.label_field) if opts.labels else {}
    encoders, rows_out, overlaps, wups = {}, [], {}, {}
    for name, path in opts.predictions.items():
        items = _read_captions(path, opts, labels, attrs)
        rows = []
        for it in items:
            verdict, animal = judge_caption(it["text"], it["label"], matcher)
            ov = attrs.overlap(it["label"], animal, opts.overlap) if verdict == "mistaken" else None
            rows.append({"encoder": name, **it, "verdict": verdict, "mentioned": animal, "overlap": ov})
        encoders[name] = {"predictions": str(path), **overlap_summary(rows, attrs, opts.overlap)}
        overlaps[name] = [v["overlap"] for v in encoders[name]["most_mistaken"].values()]
        if opts.wup:
            wups[name], encoders[name]["wup_missed"] = _wup_missed(items, opts)
        rows_out += rows
    writes = ("results.json", "captions.jsonl", "awa2_overlap.png", "wup_missed.png")
    out = claim_output_folder(opts.out, "analysis", writes, opts.overwrite)
    write_jsonl(out / "captions.jsonl", rows_out)
    what = "shared" if opts.overlap == "shared" else "agreeing"
    boxplot(out / "awa2_overlap.png", overlaps, "True animal vs its most common mistake",
            f"{what} AwA2 properties (of {len(attrs.predicates)})", (-0.5, len(attrs.predicates) + 0.5))  # fmt: skip
    plots = ["awa2_overlap.png"]
    if opts.wup:
        boxplot(out / "wup_missed.png", wups, "Captions that miss the animal", "Wu-Palmer similarity", (-0.03, 1.03))
        plots.append("wup_missed.png")
    results = {"awa2": str(opts.awa2), "classes": len(attrs.classes), "predicates": len(attrs.predicates),
               "overlap": opts.overlap, "encoders": encoders, "plots": plots}  # fmt: skip
    write_json(out / "results.json", results)
    return results


# Eight AwA2 animals with eight of its 85 predicates, values set by us for the fixture (not AwA2's matrix).
_FIXTURE_PREDICATES = ("black", "white", "stripes", "hooves", "water", "flippers", "claws", "fierce")
_FIXTURE = {
    "zebra": ((0, 0, 0), (1, 1, 1, 1, 0, 0, 0, 0)),
    "horse": ((150, 90, 40), (1, 1, 0, 1, 0, 0, 0, 0)),
    "tiger": ((230, 120, 20), (1, 1, 1, 0, 0, 0, 1, 1)),
    "polar+bear": ((240, 240, 240), (0, 1, 0, 0, 1, 0, 1, 1)),
    "grizzly+bear": ((110, 70, 30), (1, 0, 0, 0, 1, 0, 1, 1)),
    "killer+whale": ((20, 20, 60), (1, 1, 0, 0, 1, 1, 0, 1)),
    "dolphin": ((90, 130, 200), (0, 1, 0, 0, 1, 1, 0, 0)),
    "dalmatian": ((200, 200, 200), (1, 1, 0, 0, 0, 0, 1, 0)),
}


def write_fixture(folder: str | os.PathLike[str], per_class: int = 3, seed: int = 0) -> Path:
    """A small folder in AwA2's released layout (the three attribute files, ``JPEGImages/<class>/<class>_1NNNN.jpg``
    with synthetic 32 px images) plus ``captions.jsonl`` ({"id", "image", "caption", "label"}) and a CC3M-style
    ``pairs.tsv`` (caption<TAB>image path) for training on it. For docs and tests; the values are made up."""
    from PIL import Image

    root = Path(folder)
    rng = np.random.default_rng(seed)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    names = list(_FIXTURE)
    (root / "classes.txt").write_text("".join(f"{i + 1}\t{c}\n" for i, c in enumerate(names)))
    (root / "predicates.txt").write_text("".join(f"{i + 1}\t{p}\n" for i, p in enumerate(_FIXTURE_PREDICATES)))
    matrix = "".join(" ".join(str(v) for v in row) + "\n" for _, row in _FIXTURE.values())
    (root / "predicate-matrix-binary.txt").write_text(matrix)
    records = []
    for c, (colour, _) in _FIXTURE.items():
        (root / "JPEGImages" / c).mkdir(exist_ok=True)
        for k in range(per_class):
            pixels = np.clip(np.array(colour) + rng.integers(-25, 26, (32, 32, 3)), 0, 255).astype(np.uint8)
            rel = f"JPEGImages/{c}/{c}_{10001 + k}.jpg"
            Image.fromarray(pixels).save(root / rel, quality=95)
            records.append({"id": f"{c}_{10001 + k}", "image": rel, "caption": f"a picture of a {class_key(c)}.",
                            "label": c})  # fmt: skip
    write_jsonl(root / "captions.jsonl", records)
    (root / "pairs.tsv").write_text("".join(f"{r['caption']}\t{r['image']}\n" for r in records))
    return root
