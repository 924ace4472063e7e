"""Few-shot in-context VQA (MAGMA / LiMBeR protocol): ``[image] Q: [q] A:`` prompts with n interleaved
image-question-answer shots and the blind (no image) baseline, scored by the VQAv2 accuracy; the ``vqa`` benchmark."""

from __future__ import annotations

import itertools
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scitune.config.schema import DEFAULT_IMAGE_TOKEN
from scitune.eval.benchmark import BENCHMARKS, Benchmark, EvalOptions, Example, ScoreContext, resolve_image
from scitune.io import DataError, check_input_file, read_json, read_records

__all__ = [
    "VqaBenchmark",
    "VqaItem",
    "VqaOptions",
    "build_vqa_examples",
    "load_vqa",
    "normalize_vqa_answer",
    "row_names",
    "score_vqa_rows",
    "vqa_accuracy",
    "vqa_answer",
    "vqa_prompt",
]

# ---- answer normalisation, as the official VQA eval (vqaEval.py) does it ----------------------------------------
_NUMBER_WORDS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
_NUMBER_WORDS["none"] = "0"
_ARTICLES = {"a", "an", "the"}
_MARKS = ';/[]"{}()=+\\_-><@`,?!'  # replaced by a space, or dropped when they touch a space (colon, ' kept)
_PERIOD = re.compile(r"\.(?!\d)")  # a period not followed by a digit ("3.5" keeps its decimal point)
_DIGIT_COMMA = re.compile(r"\d,\d")
# Contractions as they should be written; a form missing some apostrophes ("dont", "couldnt've") is restored to it.
_CONTRACTIONS = """aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd
he'd've he'll he's how'd how'll how's i'd i'd've i'm i've isn't it'd it'd've it'll let's ma'am mightn't mightn't've
might've mustn't must've needn't not've o'clock oughtn't shan't she'd she'd've she'll she's should've shouldn't
shouldn't've somebody'd somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's
something'd something'd've something'll that's there'd there'd've there're there's they'd they'd've they'll they're
they've wasn't we'd we'd've we'll we're we've weren't what'll what're what's what've when's where'd where's where've
who'd who'd've who'll who're who's who've why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll
y'all'd've you'd you'd've you'll you're you've""".split()
# bare forms that are ordinary words, so never rewritten ("wont", "cant" are, as in the official eval)
_WORDS = {"its", "well", "were", "hell", "shell", "ill", "wed", "id", "lets", "shed", "whore"}


def _apostrophe_variants(word: str) -> set[str]:
    """Every spelling of ``word`` with one or more of its apostrophes left out."""
    at = [i for i, c in enumerate(word) if c == "'"]
    out = set()
    for k in range(1, len(at) + 1):
        for drop in itertools.combinations(at, k):
            out.add("".join(c for i, c in enumerate(word) if i not in drop))
    return out


_RESTORE = {v: w for w in _CONTRACTIONS for v in _apostrophe_variants(w) if v not in _WORDS}


def normalize_vqa_answer(text: str) -> str:
    """An answer as the official VQA eval compares it: newlines/tabs to spaces and stripped; the marks of
    ``_MARKS`` replaced by a space (or removed where one touches a space, or anywhere when the text has a digit
    comma like ``10,000``); periods removed unless a digit follows; lower-cased; number words zero..ten (and
    "none") turned into digits; articles (a, an, the) dropped; contractions missing apostrophes restored
    (``dont`` -> ``don't``); words re-joined by single spaces.
    """
    text = text.replace("\n", " ").replace("\t", " ").strip()
    drop_all = _DIGIT_COMMA.search(text) is not None
    out = text
    for mark in _MARKS:
        touching = f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if touching or drop_all else " ")
    out = _PERIOD.sub("", out)
    words = [_NUMBER_WORDS.get(w, w) for w in out.lower().split()]
    return " ".join(_RESTORE.get(w, w) for w in words if w not in _ARTICLES)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQA accuracy of one answer against the human answers, in [0, 1]; both sides `normalize_vqa_answer`-ed.

    With 10 (or more) answers it is the official formula: min(#matches among the other answers / 3, 1) averaged
    over the answers left out one at a time (the 10-choose-9 subsets), so 1, 2, 3 and 4+ matches of 10 give 0.3,
    0.6, 0.9 and 1. With k < 10 answers: min(#matches / min(3, k), 1) (a single answer is exact match).
    """
    if not answers:
        raise ValueError("vqa_accuracy needs at least one answer")
    pred = normalize_vqa_answer(prediction)
    gold = [normalize_vqa_answer(a) for a in answers]
    if len(gold) >= 10:
        hits = [g == pred for g in gold]
        total = sum(hits)
        return sum(min(1.0, (total - h) / 3) for h in hits) / len(gold)
    return min(1.0, sum(g == pred for g in gold) / min(3, len(gold)))


def vqa_answer(text: str) -> str:
    """The answer in a generation: its first non-empty line, cut where the model starts a new ``Q:`` of its own."""
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    return re.split(r"(?:^|\s)Q:", line, maxsplit=1)[0].strip()


# ---- data -----------------------------------------------------------------------------------------------------------
@dataclass
class VqaItem:
    """One open-ended question about an image (or none: text-only) and its human answers."""

    id: str
    question: str
    answers: list[str]
    image: str | None = None

    @property
    def answer(self) -> str:
        """The answer shown when the item is a shot: the most frequent one (the first of a tie)."""
        return Counter(self.answers).most_common(1)[0][0]


def _format(path: Path) -> tuple[str, Any]:
    """``(format, parsed JSON or None)``: ``scienceqa`` (problems.json or its folder), ``vqav2`` or ``records``."""
    if path.is_dir():
        if (path / "problems.json").is_file():
            return "scienceqa", read_json(path / "problems.json")
        raise DataError(f"{path}: a VQA data folder must hold problems.json (ScienceQA / SciFig layout)")
    check_input_file(path, "VQA data file")
    if path.suffix != ".json":
        return "records", None
    data = read_json(path)
    if isinstance(data, dict) and "questions" in data:
        return "vqav2", data
    if isinstance(data, dict) and data and all(isinstance(v, dict) and "choices" in v for v in data.values()):
        return "scienceqa", data
    return "records", None


def _records(path: Path, image_root: str | None) -> list[VqaItem]:
    roots = [Path(image_root)] if image_root else [path.parent, path.parent / "images"]
    out = []
    for where, rec in read_records(path):
        ident, question, answers = rec.get("id", rec.get("question_id")), rec.get("question"), rec.get("answers")
        if isinstance(ident, bool) or not isinstance(ident, str | int):
            raise DataError(f"{where}: a VQA record needs an 'id' (string or integer)")
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{where}: 'question' must be a non-empty string")
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
            raise DataError(f"{where}: 'answers' must be a non-empty list of strings")
        image = rec.get("image")
        if image is not None and not isinstance(image, str):
            raise DataError(f"{where}: 'image' must be a path string or null")
        out.append(VqaItem(str(ident), question, answers, resolve_image(image, roots) if image else None))
    return out


def _vqav2(path: Path, questions: dict[str, Any], annotations: str | None, image_root: str | None) -> list[VqaItem]:
    ann_path = Path(annotations) if annotations else path.with_name(
        path.name.replace("OpenEnded_", "").replace("questions", "annotations"))  # fmt: skip
    if not ann_path.is_file():
        raise DataError(f"{path}: VQAv2 annotations not found at {ann_path}; pass --annotations")
    anns = read_json(ann_path)
    if not isinstance(anns, dict) or not isinstance(anns.get("annotations"), list):
        raise DataError(f"{ann_path}: expected a VQAv2 annotations file (an object with an 'annotations' list)")
    by_qid = {}
    for i, a in enumerate(anns["annotations"]):
        if not isinstance(a, dict) or "question_id" not in a or not isinstance(a.get("answers"), list):
            raise DataError(f"{ann_path}: annotation #{i}: needs question_id and a list of answers")
        by_qid[a["question_id"]] = [str(x["answer"]) if isinstance(x, dict) else str(x) for x in a["answers"]]
    subtype = str(questions.get("data_subtype", "val2014"))
    roots = [Path(image_root)] if image_root else [path.parent / subtype, path.parent]
    out = []
    for i, q in enumerate(questions["questions"]):
        if not isinstance(q, dict) or not all(k in q for k in ("question_id", "image_id", "question")):
            raise DataError(f"{path}: question #{i}: needs question_id, image_id and question")
        if not by_qid.get(q["question_id"]):
            raise DataError(f"{path}: question #{i} (question_id {q['question_id']}): no answers in {ann_path}")
        image = resolve_image(f"COCO_{subtype}_{int(q['image_id']):012d}.jpg", roots)
        out.append(VqaItem(str(q["question_id"]), q["question"], by_qid[q["question_id"]], image))
    return out


def _scienceqa(path: Path, split: str, image_root: str | None) -> list[VqaItem]:
    """ScienceQA / SciFig multiple-choice problems as open-ended questions: the answer is the correct choice's text."""
    from scitune.sources.converters.scienceqa import load_scienceqa

    problems = path / "problems.json" if path.is_dir() else path
    data = load_scienceqa(problems, problems.parent / "pid_splits.json", split, missing="skip")
    base = problems.parent
    roots = [Path(image_root)] if image_root else [base / "images" / split, base / "images", base]
    out = []
    for pid in data.pids:
        prob = data.problems[pid]
        image = resolve_image(f"{pid}/{prob['image']}", roots) if prob.get("image") else None
        out.append(VqaItem(pid, prob["question"], [str(prob["choices"][prob["answer"]])], image))
    return out


def load_vqa(
    path: str | Path, annotations: str | None = None, image_root: str | None = None, split: str = "test"
) -> list[VqaItem]:
    """Read VQA items from any of three layouts.

    Args:
        path: a JSONL / JSON list of ``{"id", "image", "question", "answers": [...]}`` (image relative to the
            file's folder or its ``images/``); a VQAv2 questions file (``{"data_subtype", "questions": [...]}``,
            images ``COCO_<subtype>_<image_id:012d>.jpg``); or a ScienceQA / SciFig ``problems.json`` (or its
            folder, with ``pid_splits.json``), whose multiple-choice questions become open-ended ones answered by
            the correct choice's text.
        annotations: VQAv2 annotations file; default: the questions file name without ``OpenEnded_`` and with
            ``questions`` -> ``annotations``.
        image_root: image folder (default: per layout, see above).
        split: the ScienceQA / SciFig split.

    Raises:
        DataError: a missing file or a malformed record, named by file and record.
    """
    path = Path(path)
    kind, data = _format(path)
    if kind == "vqav2":
        return _vqav2(path, data, annotations, image_root)
    if kind == "scienceqa":
        return _scienceqa(path, split, image_root)
    return _records(path, image_root)


# ---- prompts ----------------------------------------------------------------------------------------------------
def row_names(shots: Sequence[int], blind: bool) -> list[tuple[str, int, bool]]:
    """``(row name, shots, blind)`` per report row: ``n-shot`` for each n, then ``blind-n-shot`` when ``blind``."""
    if not shots or len(set(shots)) != len(shots) or any(isinstance(n, bool) or n < 0 for n in shots):
        raise ValueError(f"--shots must be distinct non-negative integers, got {list(shots)}")
    rows = [(f"{n}-shot", int(n), False) for n in shots]
    return rows + ([(f"blind-{n}-shot", int(n), True) for n in shots] if blind else [])


def vqa_prompt(question: str, shots: Sequence[tuple[str, str]], image_token: str | None = DEFAULT_IMAGE_TOKEN) -> str:
    """``[image] Q: [q] A: [a]`` per shot, then ``[image] Q: [question] A:``, one per line; no image placeholders
    when ``image_token`` is None (the blind prompt)."""
    head = f"{image_token}\n" if image_token else ""
    return "\n".join([*(f"{head}Q: {q} A: {a}" for q, a in shots), f"{head}Q: {question} A:"])


def _draw(pool: list[VqaItem], query: VqaItem, k: int, rng: random.Random) -> list[VqaItem]:
    """``k`` distinct support items, none being the query or showing its image."""

    def usable(s: VqaItem) -> bool:
        return s.id != query.id and s.image != query.image

    if k == 0:
        return []
    if len(pool) > 8 * k:  # a large pool: rejection sampling, no pass over the whole pool per query
        picked: dict[int, VqaItem] = {}
        for _ in range(50 * k):
            i = rng.randrange(len(pool))
            if i not in picked and usable(pool[i]):
                picked[i] = pool[i]
                if len(picked) == k:
                    return list(picked.values())
    candidates = [s for s in pool if usable(s)]
    if len(candidates) < k:
        raise DataError(f"question {query.id}: the support set has {len(candidates)} usable item(s), {k} shots asked")
    return rng.sample(candidates, k)


def build_vqa_examples(
    queries: Sequence[VqaItem],
    support: Sequence[VqaItem],
    shots: Sequence[int] = (0, 1, 2, 4),
    blind: bool = True,
    seed: int = 0,
    image_token: str = DEFAULT_IMAGE_TOKEN,
) -> list[Example]:
    """One `Example` per (question, row), question-major; ids ``<row>/<question id>``.

    The shots of a question are drawn once with ``random.Random(f"{seed}:{question id}")`` from the support items
    that have an image (never the question itself or another question on its image) and the n-shot row takes the
    first n, so rows are nested and the blind row of n shows the same n question-answer pairs without images.
    Questions without an image are left out (see `VqaBenchmark`).
    """
    rows = row_names(shots, blind)
    pool = [s for s in support if s.image]
    out = []
    for q in queries:
        if not q.image:
            continue
        drawn = _draw(pool, q, max(shots), random.Random(f"{seed}:{q.id}"))
        for name, n, no_image in rows:
            pairs = [(s.question, s.answer) for s in drawn[:n]]
            text = vqa_prompt(q.question, pairs, None if no_image else image_token)
            images = [] if no_image else [*(str(s.image) for s in drawn[:n]), str(q.image)]
            meta = {
                "row": name,
                "shots": n,
                "blind": no_image,
                "question": q.question,
                "shot_ids": [s.id for s in drawn[:n]],
            }
            out.append(Example(f"{name}/{q.id}", text, images, target=list(q.answers), meta=meta))
    return out


def score_vqa_rows(examples: Sequence[Example], predictions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """VQA accuracy per row (percent, missing predictions scored 0) of `build_vqa_examples` examples.

    Returns:
        ``{"rows": {row: {"shots", "blind", "count", "answered", "accuracy"}}, "per_item": {id: accuracy}}``.
    """
    rows: dict[str, dict[str, Any]] = {}
    per_item: dict[str, float] = {}
    for e in examples:
        row = rows.setdefault(e.meta["row"], {"shots": e.meta["shots"], "blind": e.meta["blind"], "count": 0,
                                              "answered": 0, "total": 0.0})  # fmt: skip
        text = predictions.get(e.id, {}).get("text")
        acc = vqa_accuracy(vqa_answer(text), e.target) if isinstance(text, str) else 0.0
        per_item[e.id] = acc
        row["count"] += 1
        row["answered"] += isinstance(text, str)
        row["total"] += acc
    for row in rows.values():
        row["accuracy"] = 100 * row.pop("total") / row["count"]
    return {"rows": rows, "per_item": per_item}


def _blank_blind_rows(bench: Benchmark, examples: list[Example]) -> None:
    """Give each blind row the prompt of its image row with every image replaced by a blank one of its size."""
    from scitune.eval.blind import blank_images, output_folder

    by_id = {e.id: e for e in examples}
    folder, cache = output_folder(bench), {}
    for e in examples:
        if e.meta["blind"]:
            seen = by_id[e.id.removeprefix("blind-")]  # "blind-<n>-shot/<qid>" -> "<n>-shot/<qid>"
            e.text, e.images = seen.text, blank_images(seen.images, folder, cache)


# ---- the benchmark ------------------------------------------------------------------------------------------------
@dataclass
class VqaOptions(EvalOptions):
    """Few-shot VQA: --data a JSONL / JSON list of {id, image, question, answers}, a VQAv2 questions file (with
    --annotations) or a ScienceQA / SciFig problems.json (or its folder; MCQs become open-ended questions)."""

    shots: list[int] = field(default_factory=lambda: [0, 1, 2, 4])
    """Numbers of interleaved image-question-answer shots before the question, one report row each."""
    blind: bool = True
    """Also run each shot count blind (see --blind_image), reported beside the image rows."""
    blind_image: str = "none"
    """What the blind rows show: none (the prompt without images: LiMBeR's blind baseline, the language model
    alone) or blank (the image prompt with every image replaced by a white image of its size, written into --out)."""
    support: str | None = None
    """Where the shots come from (same layouts as --data); default: the --support_split of a ScienceQA / SciFig
    --data, else the other questions of --data."""
    support_split: str = "train"
    """ScienceQA / SciFig split of the support set."""
    split: str = "test"
    """ScienceQA / SciFig split of --data."""
    annotations: str | None = None
    """VQAv2 annotations file of --data (default: its name derived from the questions file)."""
    image_root: str | None = None
    """Image folder of --data (default per layout, see `scitune.eval.vqa.load_vqa`)."""
    seed: int = 0
    """Seed of the shot draw (per question, so --limit and resumed runs keep the same shots)."""
    max_new_tokens: int = 10
    """Most tokens generated per answer (answers are short)."""


@BENCHMARKS.register("vqa")
class VqaBenchmark(Benchmark):
    """Few-shot in-context VQA (MAGMA / LiMBeR): VQA accuracy per shot count, with images and blind."""

    name = "vqa"
    mode = "generate"
    Options = VqaOptions
    opts: VqaOptions

    def examples(self) -> list[Example]:
        o = self.opts
        queries = load_vqa(o.data, o.annotations, o.image_root, o.split)
        if o.support:
            support = load_vqa(o.support, split=o.support_split)
        elif _format(Path(o.data))[0] == "scienceqa":
            support = load_vqa(o.data, image_root=o.image_root, split=o.support_split)
        else:
            support = queries
        self.no_image = [q.id for q in queries if not q.image]
        if o.blind_image not in ("none", "blank"):
            raise ValueError(f"--blind_image must be none or blank, got {o.blind_image!r}")
        examples = build_vqa_examples(queries, support, o.shots, o.blind, o.seed)
        if o.blind and o.blind_image == "blank":
            _blank_blind_rows(self, examples)
        return examples

    def score(self, examples: list[Example], predictions: dict[str, dict[str, Any]], ctx: ScoreContext) -> dict:
        scored = score_vqa_rows(examples, predictions)
        rows = scored["rows"]
        samples = [{"id": e.id, "answer": vqa_answer(predictions.get(e.id, {}).get("text", "")), "answers": e.target,
                    "accuracy": scored["per_item"][e.id]} for e in examples[: 3 * len(rows)]]  # fmt: skip
        return {
            "summary": {name: r["accuracy"] for name, r in rows.items()},
            "rows": rows,
            "questions": len({e.id.split("/", 1)[1] for e in examples}),
            "skipped_no_image": getattr(self, "no_image", []),
            "blind_image": self.opts.blind_image,
            "samples": samples,
        }

    def report(self, results: dict[str, Any]) -> str:
        from scitune.eval.report import md_table

        rows = results["rows"]
        shots = list(dict.fromkeys(r["shots"] for r in rows.values()))
        table = []
        for n in shots:
            image, blind = rows.get(f"{n}-shot"), rows.get(f"blind-{n}-shot")
            table.append([n, image["accuracy"] if image else None, blind["accuracy"] if blind else None,
                          (image or blind)["count"]])  # fmt: skip
        text = (
            f"VQA accuracy (%) of {results['questions']} questions, prompts `[image] Q: [q] A:` after n "
            "image-question-answer shots; blind = "
            + (
                "the same prompt with blank images"
                if results.get("blind_image") == "blank"
                else "the same prompt without images"
            )  # fmt: skip
            + ". The answer is the first line of "
            "the generation, normalised as the official VQA eval does.\n\n"
            + md_table(["shots", "with images", "blind", "questions"], table)
        )
        if results["skipped_no_image"]:
            text += f"\n{len(results['skipped_no_image'])} question(s) without an image were left out.\n"
        samples = [[s["id"], s["answer"], " / ".join(s["answers"][:3]), s["accuracy"]] for s in results["samples"]]
        return text + "\n### Samples\n\n" + md_table(["id", "answer", "gold answers", "accuracy"], samples)

    def plots(self, results: dict[str, Any], out_dir: Path) -> list[str]:
        from scitune.eval.plots import bar_chart

        rows = results["rows"]
        shots = list(dict.fromkeys(r["shots"] for r in rows.values()))
        series = {"with images": [rows[f"{n}-shot"]["accuracy"] if f"{n}-shot" in rows else None for n in shots]}
        if any(r["blind"] for r in rows.values()):
            series["blind"] = [rows[f"blind-{n}-shot"]["accuracy"] for n in shots]
        bar_chart(
            out_dir / "vqa.png", [f"{n}-shot" for n in shots], series, title="few-shot VQA", ylabel="accuracy (%)"
        )
        return ["vqa.png"]
