"""MME: yes/no questions, two per image, per subtask accuracy and accuracy+ and the perception / cognition totals,
computed as MME's ``eval_tool/calculation.py`` does (LLaVA's ``eval/MME`` uses it), from the standard layouts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scitune.eval.benchmark import BENCHMARKS, Benchmark, EvalOptions, Example, ScoreContext
from scitune.io import DataError

__all__ = ["COGNITION", "PERCEPTION", "MMEBenchmark", "MMEOptions", "load_mme", "mme_answer", "score_mme"]

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")
_LLAVA_SUFFIX = "Answer the question using a single word or phrase."
_YN = "Please answer yes or no."


def mme_answer(text: str) -> str:
    """``yes``, ``no`` or ``other`` as MME's calculation.py parses a prediction: lower-cased; exactly yes/no, else
    ``yes`` if the first four characters contain "yes", else ``no`` if they contain "no", else ``other``."""
    t = text.lower()
    if t in ("yes", "no"):
        return t
    return "yes" if "yes" in t[:4] else "no" if "no" in t[:4] else "other"


def score_mme(items: Sequence[tuple[str, str, str, str | None]]) -> dict[str, Any]:
    """Per-subtask acc / acc+ / score and the perception and cognition totals.

    Args:
        items: ``(subtask, image, gold yes/no, prediction text or None)``; a missing prediction is "other" (wrong).

    Returns:
        ``{"subtasks": {name: {"questions", "images", "acc", "acc_plus", "score", "other"}}, "perception",
        "cognition", "total"}``: acc and acc+ in percent, score = acc + acc+ (max 200 per subtask), totals are sums
        of the scores of the subtasks present. acc+ counts images whose questions are all right (MME pairs two).
    """
    by_task: dict[str, dict[str, list[bool]]] = {}
    other: dict[str, int] = {}
    for task, image, gold, text in items:
        if gold.lower() not in ("yes", "no"):
            raise DataError(f"MME {task}/{image}: gold answer must be yes or no, got {gold!r}")
        pred = "other" if text is None else mme_answer(text)
        by_task.setdefault(task, {}).setdefault(image, []).append(pred == gold.lower())
        other[task] = other.get(task, 0) + (pred == "other")
    subtasks = {}
    for task, images in by_task.items():
        answers = [ok for oks in images.values() for ok in oks]
        acc = 100 * sum(answers) / len(answers)
        acc_plus = 100 * sum(all(oks) for oks in images.values()) / len(images)
        subtasks[task] = {"questions": len(answers), "images": len(images), "acc": acc, "acc_plus": acc_plus,
                          "score": acc + acc_plus, "other": other[task]}  # fmt: skip
    perception = sum(s["score"] for t, s in subtasks.items() if t in PERCEPTION)
    cognition = sum(s["score"] for t, s in subtasks.items() if t in COGNITION)
    return {"subtasks": subtasks, "perception": perception, "cognition": cognition, "total": perception + cognition}


def _image_in(folder: Path, stem: str) -> Path | None:
    return next((folder / f"{stem}{ext}" for ext in _IMAGE_EXT if (folder / f"{stem}{ext}").is_file()), None)


def _read_lines(path: Path, columns: int) -> list[list[str]]:
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) < columns:
            raise DataError(f"{path}:{lineno}: expected {columns} tab-separated columns, got {len(parts)}")
        rows.append([p.strip() for p in parts[:columns]])
    return rows


def load_mme(root: str | Path, image_root: str | Path | None = None) -> list[tuple[str, str, str, str, str]]:
    """Read MME questions: ``(subtask, image name, question, answer, image path)`` in file order.

    Layouts: the release (``<subtask>/questions_answers_YN/<stem>.txt`` with ``<subtask>/images/<stem>.jpg``, or
    ``<subtask>/<stem>.txt`` next to ``<subtask>/<stem>.png``; lines ``question<TAB>answer``), or the flattened
    eval_tool layout (``<subtask>.txt`` with lines ``image<TAB>question<TAB>answer``; images under
    ``image_root/<subtask>/`` or ``image_root``).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: MME data must be a folder")
    out = []
    flat = sorted(p for p in root.glob("*.txt"))
    if flat:
        img_base = Path(image_root) if image_root else root
        for path in flat:
            task = path.stem
            for image, question, answer in _read_lines(path, 3):
                folder = img_base / task if (img_base / task / image).is_file() else img_base
                out.append((task, image, question, answer, str(folder / image)))
        return out
    for task_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        qa_dir = task_dir / "questions_answers_YN"
        img_dir = task_dir / "images" if qa_dir.is_dir() else task_dir
        qa_dir = qa_dir if qa_dir.is_dir() else task_dir
        for path in sorted(qa_dir.glob("*.txt")):
            image_path = _image_in(img_dir, path.stem)
            image = image_path.name if image_path else f"{path.stem}.png"
            for question, answer in _read_lines(path, 2):
                out.append((task_dir.name, image, question, answer, str(image_path or img_dir / image)))
    if not out:
        raise DataError(f"{root}: no MME question files (<subtask>/questions_answers_YN/*.txt, <subtask>/*.txt or "
                        "<subtask>.txt)")  # fmt: skip
    return out


def _core(question: str) -> str:
    """The question without LLaVA's suffix and MME's "Please answer yes or no." (to match answer files)."""
    q = question.replace(_LLAVA_SUFFIX, "").strip()
    return q[: -len(_YN)].strip() if q.endswith(_YN) else q


@dataclass
class MMEOptions(EvalOptions):
    """MME: --data the MME_Benchmark_release_version folder (or a folder of flattened <subtask>.txt files)."""

    image_root: str | None = None
    """Image folder for the flattened layout (default: the data folder)."""
    prompt_suffix: str = ""
    """Appended to each question, e.g. LLaVA-1.5's "\\nAnswer the question using a single word or phrase."."""


@BENCHMARKS.register("mme")
class MMEBenchmark(Benchmark):
    """MME perception and cognition scores (acc + acc+ per subtask)."""

    name = "mme"
    mode = "generate"
    Options = MMEOptions
    opts: MMEOptions

    def examples(self) -> list[Example]:
        out, seen = [], {}
        self.lookup: dict[tuple[str, str], str] = {}
        for task, image, question, answer, path in load_mme(self.opts.data, self.opts.image_root):
            k = seen[(task, image)] = seen.get((task, image), -1) + 1
            ident = f"{task}/{image}#{k}"
            out.append(Example(ident, question + self.opts.prompt_suffix, [path], target=answer,
                               meta={"task": task, "image": image}))  # fmt: skip
            self.lookup[(f"{task}/{Path(image).stem}", _core(question))] = ident
        return out

    def prediction_key(self, record: dict[str, Any], examples_by_id: dict[str, Example]) -> str | None:
        """Our ids directly; LLaVA answer files by ``question_id`` (``subtask/image``) and the question in
        ``prompt``, as LLaVA's convert_answer_to_mme.py pairs them."""
        qid = record.get("id", record.get("question_id"))
        if not isinstance(qid, str):
            return None
        if qid in examples_by_id or not isinstance(record.get("prompt"), str):
            return qid
        # e.g. "artwork/images/14777.jpg": subtask = first part, image stem = last part without extension
        task, stem = qid.split("/")[0], qid.split("/")[-1].split(".")[0]
        return self.lookup.get((f"{task}/{stem}", _core(record["prompt"])), f"?{qid}")

    def score(self, examples: list[Example], predictions: dict[str, dict[str, Any]], ctx: ScoreContext) -> dict:
        items = [(e.meta["task"], e.meta["image"], e.target, predictions[e.id].get("text", "") if e.id in predictions
                  else None) for e in examples]  # fmt: skip
        res = score_mme(items)
        summary = {"perception": res["perception"], "cognition": res["cognition"]}
        summary.update({t: s["score"] for t, s in res["subtasks"].items()})
        return {"summary": summary, **res}

    def report(self, results: dict[str, Any]) -> str:
        from scitune.eval.report import md_table

        order = [t for t in (*PERCEPTION, *COGNITION) if t in results["subtasks"]]
        order += [t for t in results["subtasks"] if t not in order]
        rows = []
        for t in order:
            s = results["subtasks"][t]
            group = "perception" if t in PERCEPTION else "cognition" if t in COGNITION else "other"
            rows.append([t, group, s["questions"], s["images"], s["acc"], s["acc_plus"], s["score"], s["other"]])
        head = ["subtask", "group", "questions", "images", "acc", "acc+", "score", "not yes/no"]
        return (
            f"Perception: **{results['perception']:.2f}**, cognition: **{results['cognition']:.2f}** (sums of "
            "subtask scores = acc + acc+, in %).\n\n" + md_table(head, rows)
        )

    def plots(self, results: dict[str, Any], out_dir: Path) -> list[str]:
        from scitune.eval.plots import bar_chart

        tasks = list(results["subtasks"])
        series = {k: [results["subtasks"][t][k] for t in tasks] for k in ("acc", "acc_plus")}
        bar_chart(out_dir / "mme.png", tasks, series, title="MME per subtask (%)", ylabel="%", horizontal=True)
        return ["mme.png"]
