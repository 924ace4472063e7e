"""ScienceQA scoring that matches the official scorers: LLaVA's answer parsing, accuracy by the paper's groups
(NAT/SOC/LAN/TXT/IMG/NO/G1-6/G7-12, topic, category), readers for prediction files made elsewhere, and the
SciTune analyses (Table 4: lecture frequency; Table 5: lecture/solution quality by correct/incorrect).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scitune.eval.metrics import SimilarityFn, bleu_n, bow_cosine, rouge_l
from scitune.io import DataError, iter_jsonl, read_json

__all__ = [
    "GROUPS",
    "OPTION_LETTERS",
    "ExplanationParts",
    "ScienceQAResultFile",
    "correct_by_pid",
    "explanation_quality",
    "format_acc",
    "lecture_frequency_table",
    "parse_answer",
    "predicted_index",
    "read_llava_answers",
    "read_scienceqa_results",
    "score_scienceqa",
    "split_explanation",
]

OPTION_LETTERS = ("A", "B", "C", "D", "E")
"""LLaVA's ``--options`` default: ScienceQA questions have at most five choices."""

# LLaVA's pattern, with its unescaped '.': any character may follow the letter ("The answer is B," matches too).
_ANSWER_PATTERN = re.compile(r"The answer is ([A-Z]).")

_LOWER_GRADES = frozenset(f"grade{i}" for i in range(1, 7))
_UPPER_GRADES = frozenset(f"grade{i}" for i in range(7, 13))

# The official groups (lupantech/ScienceQA tools/evaluate_acc.py), in the paper's column order.
_GROUP_RULES: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    "NAT": lambda p: p["subject"] == "natural science",
    "SOC": lambda p: p["subject"] == "social science",
    "LAN": lambda p: p["subject"] == "language science",
    "TXT": lambda p: bool(p["hint"]),
    "IMG": lambda p: bool(p["image"]),
    "NO": lambda p: not p["hint"] and not p["image"],
    "G1-6": lambda p: p["grade"] in _LOWER_GRADES,
    "G7-12": lambda p: p["grade"] in _UPPER_GRADES,
}
GROUPS = tuple(_GROUP_RULES)
"""Group names of the ScienceQA results table: NAT SOC LAN TXT IMG NO G1-6 G7-12."""

_REQUIRED_FIELDS = ("choices", "answer", "hint", "image", "subject", "grade", "topic", "category")


# --------------------------------------------------------------------------------------------------------------------
# Answer parsing and accuracy
# --------------------------------------------------------------------------------------------------------------------
def parse_answer(text: str, options: Sequence[str]) -> int:
    """Parse a generated answer into an option index exactly as LLaVA's ``llava/eval/eval_science_qa.py``.

    Rules, in order:
    1. the whole text is an option letter A–E (exact, no stripping) → that letter;
    2. the text starts with a letter A–E followed by ". " (e.g. "B. The snoring is loud.") → that letter;
    3. ``The answer is ([A-Z]).`` matches exactly once anywhere → that letter (two or more matches → failure,
       even when they agree);
    then a letter beyond the question's choices (e.g. "D" for three choices, or "F"–"Z") is a failure too.

    Args:
        text: the model's output.
        options: the question's answer choices (only their number matters).

    Returns:
        The 0-based option index, or -1 when the text could not be parsed (counted as wrong).
    """
    if text in OPTION_LETTERS:
        letter = text
    elif len(text) >= 3 and text[0] in OPTION_LETTERS and text[1:3] == ". ":
        letter = text[0]
    else:
        found = _ANSWER_PATTERN.findall(text)
        letter = found[0] if len(found) == 1 else ""
    valid = OPTION_LETTERS[: len(options)]
    return valid.index(letter) if letter in valid else -1


def predicted_index(problem: Mapping[str, Any], prediction: int | str | None) -> int:
    """The option index of a prediction: an int is taken as the index, a str is parsed, None (missing) is -1."""
    if prediction is None:
        return -1
    if isinstance(prediction, bool) or not isinstance(prediction, int | str):
        raise TypeError(f"a prediction must be an option index or a generated text, got {type(prediction).__name__}")
    if isinstance(prediction, int):
        return prediction
    return parse_answer(prediction, problem["choices"])


def format_acc(acc: float | None) -> str:
    """Two decimals as the official scorer prints (``"{:.2f}"``); ``"-"`` for an empty group."""
    return "-" if acc is None else f"{acc:.2f}"


def _tally(correct: int, count: int) -> dict[str, Any]:
    acc = 100.0 * correct / count if count else None
    return {"correct": correct, "count": count, "acc": acc, "acc_str": format_acc(acc)}


def _check_problem(pid: str, problem: Any) -> None:
    if not isinstance(problem, Mapping):
        raise DataError(f"problem {pid!r}: expected an object, got {type(problem).__name__}")
    missing = [k for k in _REQUIRED_FIELDS if k not in problem]
    if missing:
        raise DataError(f"problem {pid!r}: missing field(s) {', '.join(missing)}")


def score_scienceqa(
    problems: Mapping[str, Mapping[str, Any]],
    predictions: Mapping[str, int | str],
    split_pids: Iterable[str],
) -> dict[str, Any]:
    """Accuracy over ``split_pids`` overall, by the official groups, by topic, category and grade.

    A pid with no prediction counts as wrong (LLaVA scores it as the text "FAILED"). Predictions may be generated
    texts (parsed with `parse_answer`) or option indices (as in ScienceQA result files; -1 = unparsable).

    Groups follow lupantech/ScienceQA ``tools/evaluate_acc.py``: NAT/SOC/LAN by ``subject``; TXT = non-empty hint
    (with or without an image); IMG = an image (with or without a hint); NO = neither; G1-6 / G7-12 by ``grade``.

    Returns:
        ``{"count", "correct", "acc", "acc_str", "groups": {NAT..G7-12: tally}, "table": {"Avg", NAT..: "dd.dd"},
        "by_topic", "by_category", "by_grade": {name: tally}, "results": {pid: predicted index}}`` where a tally is
        ``{"correct", "count", "acc" (percent, exact float or None when empty), "acc_str"}``.
    """
    results: dict[str, int] = {}
    correct: dict[str, bool] = {}
    for pid in split_pids:
        if pid not in problems:
            raise DataError(f"split pid {pid!r} is not in the problems")
        problem = problems[pid]
        _check_problem(pid, problem)
        results[pid] = predicted_index(problem, predictions.get(pid))
        correct[pid] = results[pid] == problem["answer"]

    n_correct = sum(correct.values())
    out: dict[str, Any] = _tally(n_correct, len(correct))
    out["groups"] = {
        name: _tally(
            sum(correct[p] for p in correct if rule(problems[p])), sum(1 for p in correct if rule(problems[p]))
        )
        for name, rule in _GROUP_RULES.items()
    }
    out["table"] = {"Avg": out["acc_str"], **{name: t["acc_str"] for name, t in out["groups"].items()}}
    for key, fld in (("by_topic", "topic"), ("by_category", "category"), ("by_grade", "grade")):
        totals: Counter[str] = Counter(problems[p][fld] for p in correct)
        hits: Counter[str] = Counter(problems[p][fld] for p in correct if correct[p])
        out[key] = {name: _tally(hits[name], totals[name]) for name in sorted(totals)}
    out["results"] = results
    return out


def correct_by_pid(problems: Mapping[str, Mapping[str, Any]], results: Mapping[str, int]) -> dict[str, bool]:
    """``{pid: predicted index == answer}`` from the ``results`` of `score_scienceqa` or a result file."""
    missing = [pid for pid in results if pid not in problems]
    if missing:
        raise DataError(f"{len(missing)} result pid(s) not in the problems, e.g. {missing[0]!r}")
    return {pid: idx == problems[pid]["answer"] for pid, idx in results.items()}


# --------------------------------------------------------------------------------------------------------------------
# Readers for predictions made elsewhere
# --------------------------------------------------------------------------------------------------------------------
def read_llava_answers(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a LLaVA answer file (JSONL of ``{"question_id", "prompt", "text", "answer_id", "model_id",
    "metadata"}``) into ``{question_id: text}``; ids are returned as strings (ScienceQA pids are strings).

    Raises:
        DataError: naming the file and line of a record without a usable ``question_id``/``text``, or of a
            duplicate question id (LLaVA would silently keep the last one).
    """
    answers: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        qid = obj.get("question_id")
        if isinstance(qid, bool) or not isinstance(qid, str | int):
            raise DataError(f"{where}: 'question_id' must be a string or an integer, got {qid!r}")
        text = obj.get("text")
        if not isinstance(text, str):
            raise DataError(f"{where}: 'text' must be a string, got {type(text).__name__}")
        key = str(qid)
        if key in first_line:
            raise DataError(f"{where}: duplicate question_id {key!r} (first on line {first_line[key]})")
        first_line[key] = lineno
        answers[key] = text
    return answers


@dataclass(frozen=True)
class ScienceQAResultFile:
    """A ScienceQA result file: ``{"acc", "correct", "count", "results": {pid: index}, "outputs": {pid: text}}``."""

    results: dict[str, int]
    outputs: dict[str, str] = field(default_factory=dict)
    acc: float | None = None
    correct: int | None = None
    count: int | None = None


def read_scienceqa_results(path: str | os.PathLike[str]) -> ScienceQAResultFile:
    """Read a ScienceQA/LLaVA result file; ``outputs`` and the summary numbers are optional.

    Raises:
        DataError: naming the file and the offending key when the layout or a value type is wrong.
    """
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__}")
    results, outputs = data.get("results"), data.get("outputs", {})
    if not isinstance(results, dict):
        raise DataError(f"{path}: 'results' must be an object of pid → option index")
    for pid, idx in results.items():
        if isinstance(idx, bool) or not isinstance(idx, int):
            raise DataError(f"{path}: results[{pid!r}]: expected an option index (integer), got {idx!r}")
    if not isinstance(outputs, dict):
        raise DataError(f"{path}: 'outputs' must be an object of pid → text")
    for pid, text in outputs.items():
        if not isinstance(text, str):
            raise DataError(f"{path}: outputs[{pid!r}]: expected a string, got {type(text).__name__}")
    for key, kind in (("acc", int | float), ("correct", int), ("count", int)):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            raise DataError(f"{path}: {key!r} must be a number, got {value!r}")
    return ScienceQAResultFile(results, outputs, data.get("acc"), data.get("correct"), data.get("count"))


# --------------------------------------------------------------------------------------------------------------------
# Table 4: accuracy by how often a question's lecture appears in training
# --------------------------------------------------------------------------------------------------------------------
def lecture_frequency_table(
    train_problems: Mapping[str, Mapping[str, Any]],
    test_problems: Mapping[str, Mapping[str, Any]],
    correct_by_pid: Mapping[str, bool],
    bins: Sequence[int] = (5, 10, 25, 50),
) -> dict[str, Any]:
    """Accuracy of the test questions whose lecture occurs at most ``b`` times among the training problems.

    Bins are cumulative (<= 5, <= 10, ...), as in SciTune Table 4 ("#Questions", "Accuracy"). Lectures are compared
    as exact strings; questions with an empty lecture are left out (they share no lecture), lectures never seen in
    training (0 occurrences) fall in every bin, and a question missing from ``correct_by_pid`` counts as wrong.

    Returns:
        ``{"rows": [{"max_count", "questions", "correct", "acc", "acc_str"}], "no_lecture": n, "unseen": n}``.
    """
    if not bins or any(b <= 0 for b in bins) or list(bins) != sorted(set(bins)):
        raise ValueError(f"bins must be increasing positive counts, got {tuple(bins)}")
    freq = Counter(p["lecture"] for p in train_problems.values() if p["lecture"])
    counts = {pid: freq[p["lecture"]] for pid, p in test_problems.items() if p["lecture"]}
    rows = []
    for b in bins:
        pids = [pid for pid, c in counts.items() if c <= b]
        t = _tally(sum(bool(correct_by_pid.get(pid, False)) for pid in pids), len(pids))
        rows.append(
            {"max_count": b, "questions": t["count"], "correct": t["correct"], "acc": t["acc"], "acc_str": t["acc_str"]}
        )
    return {
        "rows": rows,
        "no_lecture": len(test_problems) - len(counts),
        "unseen": sum(1 for c in counts.values() if c == 0),
    }


# --------------------------------------------------------------------------------------------------------------------
# Table 5: generated lecture / solution quality
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExplanationParts:
    """The reasoning in a generated output: lecture and solution (only when marked) and the whole explanation."""

    lecture: str
    solution: str
    explanation: str
    marked: bool
    """True when the text carries LLaVA's ``LECTURE:``/``SOLUTION:`` markers (formats like QCM-LEPA)."""


_ROLE_PREFIX = re.compile(r"^\s*(?:Assistant|ASSISTANT|GPT|gpt)\s*:\s*")
_ANSWER_FIRST = re.compile(r"The answer is [A-Z]. BECAUSE: ")  # ScienceQA evaluations.py::extract_explanation
_ANSWER_TAIL = re.compile(r"###|ANSWER:|The answer is [A-Z]")
_MARKER = re.compile(r"\b(LECTURE|SOLUTION):")


def split_explanation(text: str) -> ExplanationParts:
    """Split a generated output into lecture, solution and explanation.

    Handles LLaVA's ScienceQA output formats: ``LECTURE: ...\\nSOLUTION: ...\\n###\\nANSWER: X.`` (QCM-LEPA, which
    SciTune trained on, whose outputs may start with "Assistant:" and end with " The answer is X."), answer-last
    formats (``{lecture} {solution} The answer is X.``: QCM-LEA, -LA, -EA, ...) and answer-first formats
    (``The answer is X. BECAUSE: ...``: QCM-ALE, ...). Without markers the lecture and the solution cannot be told
    apart: both are "" and only ``explanation`` (everything but the answer) is set.
    """
    body = _ROLE_PREFIX.sub("", text, count=1)
    first = _ANSWER_FIRST.search(body)
    if first is not None:
        body = body[first.end() :]
    else:
        tail = _ANSWER_TAIL.search(body)
        if tail is not None:
            body = body[: tail.start()]
    marks = list(_MARKER.finditer(body))
    if not marks:
        return ExplanationParts("", "", body.strip(), marked=False)
    parts = {"LECTURE": "", "SOLUTION": ""}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(body)
        parts[m.group(1)] = body[m.end() : end].strip()
    explanation = " ".join(p for p in (parts["LECTURE"], parts["SOLUTION"]) if p)
    return ExplanationParts(parts["LECTURE"], parts["SOLUTION"], explanation, marked=True)


_PARTS = ("lecture", "solution", "explanation")
_SCORE_KEYS = ("count", "bleu1", "bleu4", "rouge_l", "rouge_count", "similarity")


def explanation_quality(
    problems: Mapping[str, Mapping[str, Any]],
    outputs: Mapping[str, str],
    correct_by_pid: Mapping[str, bool],
    similarity: SimilarityFn = bow_cosine,
    rouge: Callable[[str, str], float] = rouge_l,
    marked_format: bool = True,
) -> dict[str, Any]:
    """BLEU-1, BLEU-4, ROUGE-L and similarity of generated lectures/solutions vs the gold ones (SciTune Table 5).

    Each output is split with `split_explanation`; "lecture" and "solution" are scored against the problem's
    ``lecture``/``solution``, "explanation" against ``lecture + " " + solution`` as ScienceQA's
    ``tools/evaluations.py`` does. As there, a pair counts only when its gold text is non-empty, and
    ROUGE-L also skips an empty generated text; BLEU-n uses ScienceQA's tokenization and nltk's rules. The same
    skip rule as BLEU is applied to similarity (ScienceQA keeps every pair there).

    Args:
        problems: pid → problem (needs ``lecture`` and ``solution``).
        outputs: pid → generated text, e.g. `ScienceQAResultFile.outputs` or `read_llava_answers`.
        correct_by_pid: pid → whether the answer was right (see `correct_by_pid`); every output needs one.
        similarity: ``(generated, gold) -> score``; `bow_cosine` by default (`metrics.similarity_scorer` for more).
        rouge: ``(generated, gold) -> score``; rouge-score's ROUGE-L by default, `metrics.rouge_l_scienceqa` for the
            ``rouge`` package that ScienceQA's scorer uses.
        marked_format: the model was trained to write ``LECTURE:``/``SOLUTION:`` (QCM-LEPA, as SciTune); a part
            whose marker is missing is then an empty generation. False (e.g. QCM-LEA, QCM-ALE): lecture and
            solution cannot be separated, and only "explanation" is scored.

    Returns:
        ``{"all"|"correct"|"incorrect": {"lecture"|"solution"|"explanation": {"count", "bleu1", "bleu4",
        "rouge_l", "rouge_count", "similarity"}}, "questions": {...: n}, "unmarked": outputs without markers,
        "similarity": name}``; means are None when nothing was scored.
    """
    # per subset and part: running sums of each score and how many pairs were scored
    sums: dict[str, dict[str, dict[str, float]]] = {
        s: {p: dict.fromkeys(_SCORE_KEYS, 0.0) for p in _PARTS} for s in ("all", "correct", "incorrect")
    }
    n_questions: Counter[str] = Counter()
    unmarked = 0
    for pid, text in outputs.items():
        if pid not in problems:
            raise DataError(f"output pid {pid!r} is not in the problems")
        if pid not in correct_by_pid:
            raise DataError(f"output pid {pid!r} has no correctness entry")
        prob = problems[pid]
        parts = split_explanation(text)
        unmarked += not parts.marked
        gold = {
            "lecture": prob["lecture"].strip(),
            "solution": prob["solution"].strip(),
            "explanation": (prob["lecture"] + " " + prob["solution"]).strip(),
        }
        gen = {"lecture": parts.lecture, "solution": parts.solution, "explanation": parts.explanation}
        subsets = ("all", "correct" if correct_by_pid[pid] else "incorrect")
        for s in subsets:
            n_questions[s] += 1
        for part in _PARTS:
            if not gold[part] or (part != "explanation" and not marked_format):
                continue
            scores = {
                "count": 1.0,
                "bleu1": bleu_n(gold[part], gen[part], 1),
                "bleu4": bleu_n(gold[part], gen[part], 4),
                "similarity": similarity(gen[part], gold[part]),
            }
            if gen[part]:
                scores.update(rouge_count=1.0, rouge_l=rouge(gen[part], gold[part]))
            for s in subsets:
                for key, value in scores.items():
                    sums[s][part][key] += value

    def summarize(acc: dict[str, float]) -> dict[str, Any]:
        n, nr = int(acc["count"]), int(acc["rouge_count"])
        return {
            "count": n,
            "bleu1": acc["bleu1"] / n if n else None,
            "bleu4": acc["bleu4"] / n if n else None,
            "rouge_l": acc["rouge_l"] / nr if nr else None,
            "rouge_count": nr,
            "similarity": acc["similarity"] / n if n else None,
        }

    out: dict[str, Any] = {s: {p: summarize(sums[s][p]) for p in _PARTS} for s in sums}
    out["questions"] = {s: n_questions[s] for s in sums}
    out["unmarked"] = unmarked
    out["similarity"] = getattr(similarity, "name", getattr(similarity, "__name__", type(similarity).__name__))
    return out
