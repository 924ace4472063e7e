"""POPE object-hallucination benchmark (random / popular / adversarial): yes/no extraction and accuracy, precision,
recall, F1 and yes-ratio exactly as POPE's ``evaluate.py`` and LLaVA's ``eval_pope.py`` compute them; POPE's own
question files or LLaVA's combined question file (split by its ``category``), and the ``--blind`` baseline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scitune.eval.benchmark import BENCHMARKS, Benchmark, EvalOptions, Example, ScoreContext, resolve_image
from scitune.eval.blind import with_blind
from scitune.io import DataError, iter_jsonl

__all__ = ["PopeBenchmark", "PopeOptions", "pope_answer", "score_pope"]

SPLITS = ("random", "popular", "adversarial")
METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio")


def pope_answer(text: str) -> str:
    """``yes`` or ``no`` as POPE's evaluate.py reads an answer.

    Only the text before the first ``.`` is kept, commas are removed, and it is split on single spaces: if one of
    the pieces is exactly ``No``, ``no`` or ``not`` the answer is ``no``, otherwise ``yes`` (so an empty or
    unrelated answer counts as yes, as in the official script).
    """
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if "No" in words or "not" in words or "no" in words else "yes"


def score_pope(labels: Sequence[str], answers: Sequence[str | None]) -> dict[str, Any]:
    """POPE metrics of one split with "yes" as the positive class.

    Args:
        labels: gold ``yes``/``no`` per question.
        answers: the model's text per question, or None when it gave none; a missing answer is scored as the wrong
            one (the opposite of the label) in every metric, so it lowers accuracy as the official scorer's
            "missing = wrong" rule says.

    Returns:
        ``{"count", "missing", "tp", "fp", "tn", "fn", "accuracy", "precision", "recall", "f1", "yes_ratio"}`` with
        fractions in [0, 1] (as POPE prints them); a ratio with a zero denominator is None.
    """
    if len(labels) != len(answers):
        raise ValueError(f"{len(labels)} labels but {len(answers)} answers")
    tp = fp = tn = fn = missing = 0
    for label, text in zip(labels, answers):
        if label not in ("yes", "no"):
            raise DataError(f"POPE label must be yes or no, got {label!r}")
        if text is None:
            missing += 1
            pred = "no" if label == "yes" else "yes"
        else:
            pred = pope_answer(text)
        tp += pred == "yes" and label == "yes"
        fp += pred == "yes" and label == "no"
        tn += pred == "no" and label == "no"
        fn += pred == "no" and label == "yes"
    n = tp + fp + tn + fn
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else (0.0 if n else None)
    return {
        "count": n, "missing": missing, "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "accuracy": (tp + tn) / n if n else None, "precision": precision, "recall": recall, "f1": f1,
        "yes_ratio": (tp + fp) / n if n else None,
    }  # fmt: skip


def _label_index(folder: Path, category: str, cache: dict[str, dict[tuple[str, str], str]]) -> dict:
    """(image, text) -> label of POPE's ``coco_pope_<category>.json`` in ``folder`` (read once per category)."""
    if category not in cache:
        path = folder / f"coco_pope_{category}.json"
        if not path.is_file():
            raise DataError(f"{path}: POPE label file of category {category!r} not found (see --labels)")
        index: dict[tuple[str, str], str] = {}
        for lineno, q in iter_jsonl(path):
            if not all(k in q for k in ("image", "text", "label")):
                raise DataError(f"{path}:{lineno}: a POPE label record needs image, text and label")
            index[(q["image"], q["text"])] = q["label"]
        cache[category] = index
    return cache[category]


def combined_questions(path: Path, labels: Path) -> list[dict[str, Any]]:
    """LLaVA's combined POPE question file (``llava_pope_test.jsonl``: question_id, image, text, category a line) with
    each question's label: its own ``label`` field, else the label of the same image and question in POPE's
    ``labels/coco_pope_<category>.json`` (LLaVA's ``--annotation-dir``; LLaVA's eval_pope.py pairs them by position
    within a category, which is the same pairing when the files are unchanged). Raises DataError naming the line."""
    out, cache, seen = [], {}, set()
    for lineno, q in iter_jsonl(path):
        if not all(k in q for k in ("question_id", "image", "text", "category")):
            raise DataError(f"{path}:{lineno}: a combined POPE question needs question_id, image, text and category")
        if str(q["question_id"]) in seen:
            raise DataError(f"{path}:{lineno}: question_id {q['question_id']!r} repeats (answers could not be matched)")
        seen.add(str(q["question_id"]))
        label = q.get("label")
        if label is None:
            text = q["text"]
            index = _label_index(labels, str(q["category"]), cache)
            # LLaVA appends its answer-format line to POPE's question: the label file has the bare question
            label = index.get((q["image"], text), index.get((q["image"], text.split("\n")[0])))
            if label is None:
                raise DataError(
                    f"{path}:{lineno}: no label for this image and question in coco_pope_{q['category']}.json"
                )
        out.append({**q, "label": label})
    return out


@dataclass
class PopeOptions(EvalOptions):
    """POPE: --data a folder of coco_pope_<split>.json question files (JSONL: question_id, image, text, label), one
    such file, or LLaVA's combined llava_pope_test.jsonl (question_id, image, text, category; labels from --labels);
    images from --image_root (MSCOCO val2014)."""

    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    """Splits to evaluate when --data is a folder (files coco_pope_<split>.json)."""
    image_root: str | None = None
    """Folder of the COCO images the questions name; default <data>/val2014."""
    prompt_suffix: str = ""
    """Appended to each question, e.g. LLaVA-1.5's "\\nAnswer the question using a single word or phrase."."""
    labels: str | None = None
    """For LLaVA's combined question file: the folder of POPE's coco_pope_<category>.json label files (LLaVA's
    --annotation-dir); default: the question file's folder, then its coco/ subfolder."""
    blind: bool = False
    """Also run the blind baseline (every image replaced by a white image of its size), reported beside."""


@BENCHMARKS.register("pope")
@with_blind
class PopeBenchmark(Benchmark):
    """POPE: accuracy, precision, recall, F1 and yes-ratio per split (yes = positive)."""

    name = "pope"
    mode = "generate"
    Options = PopeOptions
    opts: PopeOptions

    def _files(self) -> dict[str, Path]:
        src = Path(self.opts.data)
        if src.is_file():
            stem = src.stem
            return {stem[len("coco_pope_") :] if stem.startswith("coco_pope_") else stem: src}
        files = {s: src / f"coco_pope_{s}.json" for s in self.opts.splits}
        absent = [str(p) for p in files.values() if not p.is_file()]
        if absent:
            raise DataError(f"{src}: POPE question file(s) not found: {', '.join(absent)}")
        return files

    def _combined(self) -> list[dict[str, Any]] | None:
        """The questions of a combined file (a --data file whose first record has a ``category``), else None."""
        src = Path(self.opts.data)
        if not src.is_file():
            return None
        first = next(iter(iter_jsonl(src)), (0, {}))[1]
        if "category" not in first:
            return None
        if self.opts.labels:
            labels = Path(self.opts.labels)
        else:
            labels = next((d for d in (src.parent, src.parent / "coco") if any(d.glob("coco_pope_*.json"))), src.parent)
        return combined_questions(src, labels)

    def examples(self) -> list[Example]:
        base = Path(self.opts.data) if Path(self.opts.data).is_dir() else Path(self.opts.data).parent
        roots = [Path(self.opts.image_root)] if self.opts.image_root else [base / "val2014", base]
        combined = self._combined()
        if combined is not None:
            out = [Example(f"{q['category']}/{q['question_id']}", q["text"] + self.opts.prompt_suffix,
                           [resolve_image(q["image"], roots)], target=q["label"], meta={"split": q["category"]})
                   for q in combined]  # fmt: skip
            self.split_names = list(dict.fromkeys(e.meta["split"] for e in out))
            self.combined_ids = {str(q["question_id"]): e.id for q, e in zip(combined, out)}
            return out
        files = self._files()
        out = []
        for split, path in files.items():
            for lineno, q in iter_jsonl(path):
                if not all(k in q for k in ("question_id", "image", "text", "label")):
                    raise DataError(f"{path}:{lineno}: a POPE question needs question_id, image, text and label")
                out.append(Example(f"{split}/{q['question_id']}", q["text"] + self.opts.prompt_suffix,
                                   [resolve_image(q["image"], roots)], target=q["label"], meta={"split": split}))  # fmt: skip
        self.split_names = list(files)
        return out

    def prediction_key(self, record: dict[str, Any], examples_by_id: dict[str, Example]) -> str | None:
        """``split/question_id``: LLaVA answer files carry the bare question id, which is unambiguous only for one
        split (or with a ``category`` field naming the split)."""
        qid = record.get("question_id", record.get("id"))
        if isinstance(qid, bool) or not isinstance(qid, str | int):
            return None
        qid = str(qid)
        if "/" in qid:
            return qid
        combined = getattr(self, "combined_ids", None)
        if combined is not None:  # LLaVA's answers to its combined file: ids unique over all categories
            return combined.get(qid, f"?/{qid}")
        if isinstance(record.get("category"), str):
            return f"{record['category']}/{qid}"
        splits = getattr(self, "split_names", [])
        return f"{splits[0]}/{qid}" if len(splits) == 1 else f"?/{qid}"

    def score(self, examples: list[Example], predictions: dict[str, dict[str, Any]], ctx: ScoreContext) -> dict:
        per_split: dict[str, dict[str, Any]] = {}
        for split in dict.fromkeys(e.meta["split"] for e in examples):
            items = [e for e in examples if e.meta["split"] == split]
            answers = [predictions[e.id].get("text", "") if e.id in predictions else None for e in items]
            per_split[split] = score_pope([e.target for e in items], answers)
        summary: dict[str, Any] = {}
        for split, m in per_split.items():
            summary.update({f"{split}_{k}": None if m[k] is None else 100 * m[k] for k in ("accuracy", "f1")})
        f1s = [m["f1"] for m in per_split.values() if m["f1"] is not None]
        summary["mean_f1"] = 100 * sum(f1s) / len(f1s) if f1s else None
        return {"summary": summary, "splits": per_split}

    def report(self, results: dict[str, Any]) -> str:
        from scitune.eval.report import md_table

        rows = [[s, m["count"], m["missing"], *(None if m[k] is None else 100 * m[k] for k in METRICS),
                 m["tp"], m["fp"], m["tn"], m["fn"]] for s, m in results["splits"].items()]  # fmt: skip
        head = ["split", "n", "missing", "accuracy", "precision", "recall", "F1", "yes-ratio", "TP", "FP", "TN", "FN"]
        return (
            'Percentages; an answer is "no" when its first sentence has the word No, no or not, else "yes" '
            "(POPE's evaluate.py); a missing answer is scored wrong.\n\n" + md_table(head, rows)
        )

    def plots(self, results: dict[str, Any], out_dir: Path) -> list[str]:
        from scitune.eval.plots import bar_chart

        splits = results["splits"]
        series = {s: [None if m[k] is None else 100 * m[k] for k in METRICS] for s, m in splits.items()}
        bar_chart(out_dir / "pope.png", list(METRICS), series, title="POPE (%)", ylabel="%")
        return ["pope.png"]
