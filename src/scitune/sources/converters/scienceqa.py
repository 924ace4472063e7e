"""ScienceQA -> canonical LLaVA-conversation records, reproducing LLaVA's `convert_sqa_to_llava.py` byte for byte.

Also holds the evaluation prompt builder (LLaVA's ``llava_test_CQM-A.json`` question text) and the split loader.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

from scitune.config.schema import DEFAULT_IMAGE_TOKEN as IMAGE_TOKEN
from scitune.images import resolve_image_path
from scitune.io import DataError, write_jsonl, write_text
from scitune.sources.converters.base import CONVERTERS
from scitune.sources.converters.reading import read_json_source

logger = logging.getLogger(__name__)

OPTIONS: tuple[str, ...] = ("A", "B", "C", "D", "E")
"""Answer letters; ScienceQA problems have 2-5 choices."""

# LLaVA's input formats: Q=question, C=context, M=options, L=lecture, E=solution ("explanation").
_INPUT_TEMPLATES: dict[str, str] = {
    "CQM": "Context: {context}\nQuestion: {question}\nOptions: {choice}\n",
    "QCM": "Question: {question}\nContext: {context}\nOptions: {choice}\n",
    "QCML": "Question: {question}\nContext: {context}\nOptions: {choice}\nBECAUSE: {lecture}\n",
    "QCME": "Question: {question}\nContext: {context}\nOptions: {choice}\nBECAUSE: {solution}\n",
    "QCMLE": "Question: {question}\nContext: {context}\nOptions: {choice}\nBECAUSE: {lecture} {solution}\n",
    "QCLM": "Question: {question}\nContext: {context}\nBECAUSE: {lecture}\nOptions: {choice}\n",
    "QCEM": "Question: {question}\nContext: {context}\nBECAUSE: {solution}\nOptions: {choice}\n",
    "QCLEM": "Question: {question}\nContext: {context}\nBECAUSE: {lecture} {solution}\nOptions: {choice}\n",
}

# Quirk kept from LLaVA: "AL" inserts the *solution* and "AE" the *lecture* (the letters are swapped w.r.t. the
# input formats); "ALE"/"AEL" follow the letters. LEPA is built separately (its parts are conditional).
_OUTPUT_TEMPLATES: dict[str, str] = {
    "A": "Answer: The answer is {answer}.",
    "AL": "Answer: The answer is {answer}. BECAUSE: {solution}",
    "AE": "Answer: The answer is {answer}. BECAUSE: {lecture}",
    "ALE": "Answer: The answer is {answer}. BECAUSE: {lecture} {solution}",
    "AEL": "Answer: The answer is {answer}. BECAUSE: {solution} {lecture}",
    "LA": "Answer: {lecture} The answer is {answer}.",
    "EA": "Answer: {solution} The answer is {answer}.",
    "LEA": "Answer: {lecture} {solution} The answer is {answer}.",
    "ELA": "Answer: {solution} {lecture} The answer is {answer}.",
}

INPUT_FORMATS: tuple[str, ...] = tuple(_INPUT_TEMPLATES)
"""The 8 question-side formats of LLaVA's converter."""
OUTPUT_FORMATS: tuple[str, ...] = (*_OUTPUT_TEMPLATES, "LEPA")
"""The 10 answer-side formats of LLaVA's converter."""
PROMPT_FORMATS: tuple[str, ...] = tuple(f"{i}-{o}" for i in INPUT_FORMATS for o in OUTPUT_FORMATS)
"""All 80 ``INPUT-OUTPUT`` prompt formats."""

DEFAULT_PROMPT_FORMAT = "QCM-LEA"
"""LLaVA's ``build_prompt`` default; SciTune and LLaVA train ScienceQA with ``QCM-LEPA``."""
EVAL_PROMPT_FORMAT = "CQM-A"
"""The format of LLaVA's evaluation question file ``llava_test_CQM-A.json``."""
SINGLE_PRED_PROMPT = "Answer with the option's letter from the given choices directly."
"""Suffix LLaVA-1.5's ``model_vqa_science.py --single-pred-prompt`` appends to the question."""

SPLITS_FILE = "pid_splits.json"
PROBLEMS_FILE = "problems.json"
_TEXT_FIELDS = ("question", "hint", "lecture", "solution")


class ScienceQASplit(NamedTuple):
    """Problems and the ordered pids of one split, with the split's pids that the problems file lacks."""

    problems: dict[str, dict[str, Any]]
    pids: list[str]
    missing: list[str]


def parse_prompt_format(prompt_format: str) -> tuple[str, str]:
    """Split ``"QCM-LEA"`` into ``("QCM", "LEA")``; raise ``ValueError`` naming the known formats otherwise."""
    parts = prompt_format.split("-")
    if len(parts) != 2 or parts[0] not in _INPUT_TEMPLATES or parts[1] not in OUTPUT_FORMATS:
        raise ValueError(
            f"unknown ScienceQA prompt format {prompt_format!r}; expected INPUT-OUTPUT with INPUT in "
            f"{', '.join(INPUT_FORMATS)} and OUTPUT in {', '.join(OUTPUT_FORMATS)}"
        )
    return parts[0], parts[1]


def validate_problem(pid: str, problem: Any, source: str = "problems", options: tuple[str, ...] = OPTIONS) -> None:
    """Raise `DataError` naming ``source`` and ``pid`` if ``problem`` lacks a field the converter reads."""
    where = f"{source}: problem {pid!r}"
    if not isinstance(problem, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(problem).__name__}")
    for key in _TEXT_FIELDS:
        if not isinstance(problem.get(key), str):
            raise DataError(f"{where}: field {key!r} must be a string, got {problem.get(key)!r:.60}")
    choices = problem.get("choices")
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
        raise DataError(f"{where}: field 'choices' must be a non-empty list of strings, got {choices!r:.80}")
    if len(choices) > len(options):
        raise DataError(f"{where}: {len(choices)} choices but only {len(options)} option letters")
    answer = problem.get("answer")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise DataError(f"{where}: field 'answer' must be a choice index in [0, {len(choices)}), got {answer!r}")
    if "image" not in problem or not (problem["image"] is None or isinstance(problem["image"], str)):
        raise DataError(f"{where}: field 'image' must be a file name or null, got {problem.get('image')!r:.60}")


def _problem_parts(problem: dict[str, Any], use_caption: bool, options: tuple[str, ...]) -> dict[str, str]:
    """The text pieces LLaVA's templates insert, each normalised exactly as LLaVA does it."""
    # LLaVA joins hint and (optional) caption with a space, strips, and writes "N/A" when nothing is left.
    caption = problem.get("caption", "") if use_caption else ""
    context = " ".join([problem["hint"], caption]).strip() or "N/A"
    choice = " ".join(f"({options[i]}) {c}" for i, c in enumerate(problem["choices"]))
    # LLaVA escapes "\n" as "\\n" and then turns every "\\n" back into "\n": real newlines survive and a literal
    # backslash-n in the source text becomes a newline too.
    return {
        "question": problem["question"],
        "context": context,
        "choice": choice,
        "answer": options[problem["answer"]],
        "lecture": problem["lecture"].replace("\\n", "\n"),
        "solution": problem["solution"].replace("\\n", "\n"),
    }


def _lepa_output(parts: dict[str, str]) -> str:
    """LEPA: optional "LECTURE:"/"SOLUTION:" lines, a "###" separator, then "ANSWER: X."."""
    out = ""
    if parts["lecture"].strip():
        out += f"LECTURE: {parts['lecture']}\n"
    if parts["solution"].strip():
        out += f"SOLUTION: {parts['solution']}\n"
    return out + f"###\nANSWER: {parts['answer']}."


def _tidy(text: str) -> str:
    """LLaVA's clean-up: one pass of double->single space, strip, and drop an empty trailing "BECAUSE:".

    Quirks kept: the space pass is not repeated (three spaces become two), and when the text ends with
    "BECAUSE:" *every* "BECAUSE:" in it is removed, not only the last one.
    """
    text = text.replace("  ", " ").strip()
    if text.endswith("BECAUSE:"):
        text = text.replace("BECAUSE:", "").strip()
    return text


def build_prompt(
    problem: dict[str, Any],
    prompt_format: str = DEFAULT_PROMPT_FORMAT,
    *,
    use_caption: bool = False,
    options: tuple[str, ...] = OPTIONS,
    is_test: bool = False,
) -> tuple[str, str]:
    """Build the (question, answer) texts of one problem as LLaVA's converter writes them.

    The question has no ``<image>`` token (`convert_scienceqa` appends it). Quirks of LLaVA's converter are
    reproduced: a leading ``"Question: "`` / ``"Answer: "`` makes *every* occurrence of that string in the text
    disappear (LLaVA uses ``str.replace`` to drop the prefix); see also `_tidy` and `_problem_parts`.

    Args:
        problem: One ScienceQA problem (fields question, hint, choices, answer, lecture, solution).
        prompt_format: ``INPUT-OUTPUT``, e.g. ``"QCM-LEA"``; see `PROMPT_FORMATS`.
        use_caption: Append the problem's ``caption`` field to the context (LLaVA's converter never does).
        options: Answer letters.
        is_test: Build a test example: the answer text is LLaVA's bare ``"Answer:"`` placeholder.

    Returns:
        ``(question_text, answer_text)``.
    """
    input_format, output_format = parse_prompt_format(prompt_format)
    parts = _problem_parts(problem, use_caption, options)
    question = _tidy(_INPUT_TEMPLATES[input_format].format(**parts))
    if is_test:
        answer = "Answer:"
    elif output_format == "LEPA":
        answer = _lepa_output(parts)
    else:
        answer = _OUTPUT_TEMPLATES[output_format].format(**parts)
    answer = _tidy(answer)
    if question.startswith("Question: "):
        question = question.replace("Question: ", "")
    if answer.startswith("Answer: "):
        answer = answer.replace("Answer: ", "")
    return question, answer


def _human_turn(problem: dict[str, Any], question: str) -> str:
    return f"{question}\n{IMAGE_TOKEN}" if problem["image"] is not None else question


def _meta(pid: str, problem: dict[str, Any], prompt_format: str, options: tuple[str, ...]) -> dict[str, Any]:
    keys = ("split", "subject", "topic", "category", "skill", "grade", "task")
    meta: dict[str, Any] = {"source": "scienceqa", "pid": pid, "prompt_format": prompt_format}
    meta.update({k: problem[k] for k in keys if k in problem})
    meta["choices"] = list(problem["choices"])
    meta["answer"] = options[problem["answer"]]
    return meta


def convert_scienceqa(
    problems: dict[str, dict[str, Any]],
    pids: list[str],
    prompt_format: str = DEFAULT_PROMPT_FORMAT,
    *,
    with_meta: bool = False,
    use_caption: bool = False,
    options: tuple[str, ...] = OPTIONS,
    source: str = "problems",
) -> list[dict[str, Any]]:
    """Convert ScienceQA problems to canonical records, equal to LLaVA's ``llava_{split}_{format}.json`` entries.

    Each record is ``{"id", "image", "conversations": [human, gpt]}`` in that key order. As in LLaVA, a problem
    without an image has *no* ``image`` key (not ``null``) and no ``<image>`` token; an image path is
    ``os.path.join(pid, problem["image"])``, i.e. ``<pid>/image.png`` relative to the image root.

    Args:
        problems: pid -> problem, ScienceQA's ``problems.json`` schema.
        pids: The pids to convert, in output order (LLaVA keeps ``pid_splits.json`` order).
        prompt_format: ``INPUT-OUTPUT``, e.g. ``"QCM-LEPA"``; see `PROMPT_FORMATS`.
        with_meta: Add a ``meta`` dict (pid, split, subject, grade, choices, answer letter, ...). LLaVA's records
            have no ``meta`` key, so the default ``False`` gives LLaVA's exact output.
        use_caption: Append each problem's ``caption`` to the context (LLaVA's converter never does).
        options: Answer letters.
        source: Name of the problems' origin (a file path) used in error messages.

    Returns:
        The records, one per pid.

    Raises:
        DataError: A pid is missing from ``problems`` or a problem lacks a field the converter reads.
    """
    parse_prompt_format(prompt_format)
    records = []
    for pid in pids:
        if pid not in problems:
            raise DataError(f"{source}: problem {pid!r} not found ({len(problems)} problems loaded)")
        problem = problems[pid]
        validate_problem(pid, problem, source, options)
        question, answer = build_prompt(problem, prompt_format, use_caption=use_caption, options=options)
        record: dict[str, Any] = {"id": pid}
        if problem["image"] is not None:
            record["image"] = os.path.join(pid, problem["image"])
        record["conversations"] = [
            {"from": "human", "value": _human_turn(problem, question)},
            {"from": "gpt", "value": answer},
        ]
        if with_meta:
            record["meta"] = _meta(pid, problem, prompt_format, options)
        records.append(record)
    return records


def build_eval_prompt(
    problem: dict[str, Any],
    prompt_format: str = EVAL_PROMPT_FORMAT,
    *,
    with_image_token: bool = False,
    single_pred_prompt: bool = False,
    use_caption: bool = False,
    options: tuple[str, ...] = OPTIONS,
) -> str:
    """The question LLaVA's ScienceQA evaluation (``model_vqa_science.py``) asks, without any answer.

    LLaVA evaluates with the converter's test-split file (``llava_test_CQM-A.json``): it takes the human turn,
    removes every ``<image>``, strips, optionally appends `SINGLE_PRED_PROMPT` on a new line, and for problems
    with an image puts ``<image>\\n`` in front. This function returns that text.

    Args:
        problem: One ScienceQA problem.
        prompt_format: ``INPUT-OUTPUT``; only the input half matters. Defaults to LLaVA's ``CQM-A``.
        with_image_token: Prefix ``"<image>\\n"`` when the problem has an image (as the model sees it).
        single_pred_prompt: Append LLaVA-1.5's "Answer with the option's letter ..." instruction.
        use_caption: Append the problem's ``caption`` to the context.
        options: Answer letters.

    Returns:
        The prompt text of the human turn.
    """
    question, _ = build_prompt(problem, prompt_format, use_caption=use_caption, options=options)
    text = _human_turn(problem, question).replace(IMAGE_TOKEN, "").strip()
    if single_pred_prompt:
        text = f"{text}\n{SINGLE_PRED_PROMPT}"
    if with_image_token and problem["image"] is not None:
        text = f"{IMAGE_TOKEN}\n{text}"
    return text


def load_scienceqa(
    problems_path: str | os.PathLike[str],
    pid_splits_path: str | os.PathLike[str],
    split: str,
    missing: str = "error",
) -> ScienceQASplit:
    """Read ScienceQA's ``problems.json`` and ``pid_splits.json`` and select one split.

    Args:
        problems_path: ``problems.json`` (pid -> problem).
        pid_splits_path: ``pid_splits.json`` (split -> ordered pids).
        split: A split name of ``pid_splits.json`` (train, val, test, trainval, minitrain, ...).
        missing: ``"error"`` raises when a split pid is absent from the problems; ``"skip"`` drops such pids
            (they are returned in ``missing`` and logged with a warning).

    Returns:
        ``ScienceQASplit(problems, pids, missing)``; ``pids`` keeps ``pid_splits.json`` order.

    Raises:
        DataError: A file is missing or malformed, the split is unknown (the known ones are listed), a pid is
            missing from the problems (``missing="error"``), or a problem lacks a required field.
    """
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    problems = read_json_source(problems_path)
    if not isinstance(problems, dict):
        raise DataError(f"{problems_path}: expected a JSON object pid -> problem, got {type(problems).__name__}")
    splits = read_json_source(pid_splits_path)
    if not isinstance(splits, dict):
        raise DataError(f"{pid_splits_path}: expected a JSON object split -> pids, got {type(splits).__name__}")
    if split not in splits:
        raise DataError(f"{pid_splits_path}: unknown split {split!r}; known splits: {', '.join(splits)}")
    split_pids = splits[split]
    if not isinstance(split_pids, list):
        raise DataError(f"{pid_splits_path}: split {split!r} must be a list of pids")
    split_pids = [str(pid) for pid in split_pids]
    absent = [pid for pid in split_pids if pid not in problems]
    if absent:
        msg = (
            f"{problems_path}: {len(absent)} of {len(split_pids)} pids of split {split!r} ({pid_splits_path}) "
            f"are missing from the problems, first: {', '.join(absent[:5])}"
        )
        if missing == "error":
            raise DataError(msg + " (pass missing='skip' to skip them)")
        logger.warning("%s; skipping them", msg)
    absent_set = set(absent)
    pids = [pid for pid in split_pids if pid not in absent_set]
    for pid in pids:
        validate_problem(pid, problems[pid], str(problems_path))
    return ScienceQASplit(problems, pids, absent)


def _resolve_paths(src: str | os.PathLike[str], pid_splits: str | os.PathLike[str] | None) -> tuple[Path, Path]:
    """``src`` is problems.json or a folder holding it; pid_splits defaults to pid_splits.json beside it."""
    src = Path(src)
    if src.is_dir():
        problems_path = src / PROBLEMS_FILE
        if not problems_path.exists():
            raise DataError(f"{src}: folder has no {PROBLEMS_FILE}")
    else:
        problems_path = src
    splits_path = Path(pid_splits) if pid_splits is not None else problems_path.parent / SPLITS_FILE
    return problems_path, splits_path


def check_images(records: list[dict[str, Any]], image_root: str | os.PathLike[str], source: str) -> None:
    """Raise `DataError` naming the problem file, pid and path of the first record whose image is missing."""
    for record in records:
        if "image" not in record:
            continue
        try:
            path = resolve_image_path(image_root, record["image"])
        except DataError as e:
            raise DataError(f"{source}: problem {record['id']!r}: {e}") from None
        if not path.is_file():
            raise DataError(f"{source}: problem {record['id']!r}: image {path} not found (--image_root {image_root})")


@CONVERTERS.register("scienceqa")
class ScienceQAConverter:
    """``scitune convert scienceqa``: ScienceQA problems -> LLaVA-format training or evaluation records."""

    def run(
        self,
        src: str,
        out: str,
        split: str = "train",
        prompt_format: str = DEFAULT_PROMPT_FORMAT,
        pid_splits: str | None = None,
        missing: str = "error",
        with_meta: bool = False,
        use_caption: bool = False,
        image_root: str | None = None,
    ) -> dict[str, Any]:
        """Convert one split and write it atomically.

        Args:
            src: ``problems.json``, or a folder holding ``problems.json`` and ``pid_splits.json``; or the Hugging
                Face parquet release (its folder or one ``.parquet`` file; pids are ``<split>-<row>``).
            out: Output path; ``.json`` writes LLaVA's layout (a list, indent 2, ASCII-escaped, byte-identical to
                ``convert_sqa_to_llava.py``), anything else JSONL (one record a line, UTF-8).
            split: Split of ``pid_splits.json`` (train, val, test, trainval, minitrain, minival, minitest).
            prompt_format: ``INPUT-OUTPUT`` format, e.g. ``QCM-LEPA``.
            pid_splits: ``pid_splits.json`` path; defaults to the one next to the problems file.
            missing: ``"error"`` (default) fails when split pids are absent from the problems; ``"skip"``
                skips them and reports them in the summary.
            with_meta: Add a ``meta`` dict to each record (off for LLaVA's exact output).
            use_caption: Append each problem's ``caption`` to the context.
            image_root: When given, every problem with an image must have it at ``image_root/<pid>/<image>``
                (parquet: the images are written there, default ``<folder of out>/images``).

        Returns:
            Summary: output path, split, format, record counts, and the missing pids (count and first 10).
        """
        from scitune.sources.converters.scienceqa_parquet import is_scienceqa_parquet, load_parquet_split

        parse_prompt_format(prompt_format)
        parquet = is_scienceqa_parquet(src)
        if parquet:  # the Hub release: images extracted to <pid>/image.png under image_root (default <out dir>/images)
            data, root = load_parquet_split(src, split, image_root, out)
            problems_path, image_root = Path(src), str(root)
        else:
            problems_path, splits_path = _resolve_paths(src, pid_splits)
            data = load_scienceqa(problems_path, splits_path, split, missing=missing)
        records = convert_scienceqa(
            data.problems,
            data.pids,
            prompt_format,
            with_meta=with_meta,
            use_caption=use_caption,
            source=str(problems_path),
        )
        if image_root is not None:
            check_images(records, image_root, str(problems_path))
        if str(out).endswith(".json"):
            # json.dump(..., indent=2) with default ASCII escaping and no trailing newline, as LLaVA writes it.
            write_text(out, json.dumps(records, indent=2))
        else:
            write_jsonl(out, records)
        n_image = sum("image" in r for r in records)
        return {
            "converter": "scienceqa",
            "out": str(out),
            "split": split,
            "prompt_format": prompt_format,
            "records": len(records),
            "with_image": n_image,
            "text_only": len(records) - n_image,
            "missing": len(data.missing),
            "missing_first": data.missing[:10],
            **({"layout": "parquet", "image_root": image_root} if parquet else {}),
        }
