"""SciCap figures -> SciTune concept-alignment instructions (paper Appendix A), as the authors' generator writes them.

The answer lists the figure type, caption, OCR text and paragraph mentions, one per line; the question is drawn
from the 16 LLaVA questions of the paper's Table 7 with a seeded ``random.Random``.
"""

from __future__ import annotations

import json
import logging
import random
import re
from typing import Any

from scitune.config.schema import DEFAULT_IMAGE_TOKEN as IMAGE_TOKEN
from scitune.data.mixture import DETAIL_QUESTIONS
from scitune.io import DataError, write_jsonl, write_text
from scitune.sources.converters.base import CONVERTERS
from scitune.sources.converters.scicap_input import (  # noqa: F401  (FIELDS, FIELD_ALIASES, load_scicap: public here too)
    CHALLENGE_FIELDS,
    FIELD_ALIASES,
    FIELDS,
    _check_fields,
    challenge_records,
    is_challenge_layout,
    load_scicap,
    normalize_figure,
)

logger = logging.getLogger(__name__)

SYSTEM_MESSAGE = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
"""System message of the SciTune instruction template (paper Table 6; LLaVA's ``v0`` system prompt)."""

QUESTIONS: tuple[str, ...] = DETAIL_QUESTIONS
"""The 16 questions of the paper's Table 7 (LLaVA's ``detail_describe_instructions``) in the authors' order, which
matters: ``random.Random(seed).choice(QUESTIONS)`` once per input record, seed 0, reproduces the authors' draws."""

VARIANTS: dict[str, tuple[str, ...]] = {
    "C": ("caption",),
    "CT": ("figure_type", "caption"),
    "CTO": ("figure_type", "caption", "ocr"),
    "CTOM": ("figure_type", "caption", "ocr", "paragraphs", "mentions"),
}
"""Paper variants: C(aption), T(ype), O(CR), M(entions: the citing paragraphs and the mention sentences)."""

ANSWER_FORMAT = "{figure_type} {caption}\n{ocr}\n{paragraphs}\n{mentions}"
"""Assistant answer of CTOM (the authors' layout); C/CT/CTO keep the first lines only and C drops the type.

``ocr`` is the OCR tokens joined by tabs; ``paragraphs`` and ``mentions`` are joined by newlines. An empty field
still leaves its (empty) line. Afterwards every whole word "Fig"/"Figure" (any case) becomes the figure type.
"""

DEFAULT_FIGURE_TYPE = "Image"
"""Type written when a record has none (the authors' default)."""

FIGURE_WORD = re.compile(r"\b(Fig(?:ure)?)\b", re.IGNORECASE)
"""Whole-word "Fig"/"Figure" in any case; "Fig." matches, "Figures" does not."""

_REPORT_IDS = 20


def build_answer(figure: dict[str, Any], variant: str = "CTOM", keep_empty_lines: bool = True) -> str:
    """The assistant text of one normalised figure (see `ANSWER_FORMAT`).

    Args:
        figure: A record from `normalize_figure`.
        variant: One of `VARIANTS`.
        keep_empty_lines: Keep the line of an empty OCR/paragraph/mention field (the authors do).

    Returns:
        The answer text. Without T (variant C) the caption is written as is: no type, no "Figure" substitution.
    """
    parts = _variant_fields(variant)
    figure_type = figure["figure_type"] if figure["figure_type"] is not None else DEFAULT_FIGURE_TYPE
    lines = [f"{figure_type} {figure['caption']}" if "figure_type" in parts else figure["caption"]]
    if "ocr" in parts:
        lines.append("\t".join(figure["ocr"]))
    if "paragraphs" in parts:
        lines.append("\n".join(figure["paragraphs"]))
    if "mentions" in parts:
        lines.append("\n".join(figure["mentions"]))
    if not keep_empty_lines:
        lines = lines[:1] + [line for line in lines[1:] if line]
    text = "\n".join(lines)
    if "figure_type" in parts:
        # A function replacement so a type containing a backslash is inserted literally.
        text = FIGURE_WORD.sub(lambda _: figure_type, text)
    return text


def _variant_fields(variant: str) -> tuple[str, ...]:
    if variant not in VARIANTS:
        raise ValueError(f"unknown SciCap variant {variant!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[variant]


def empty_fields(figure: dict[str, Any], variant: str = "CTOM") -> list[str]:
    """The selected fields of ``variant`` that are empty (a missing figure type counts as empty)."""
    empty = []
    for name in _variant_fields(variant):
        value = figure[name]
        text = value if isinstance(value, str) or value is None else "".join(value)
        if not (text or "").strip():
            empty.append(name)
    return empty


def _new_report(variant: str, seed: int | None, n: int) -> dict[str, Any]:
    fields = _variant_fields(variant)
    return {
        "variant": variant,
        "seed": seed,
        "records": n,
        "written": 0,
        "empty": dict.fromkeys(fields, 0),
        "empty_ids": {name: [] for name in fields},
        "dropped": 0,
        "dropped_ids": [],
        "no_image": 0,
        "no_image_ids": [],
    }


def _warn(report: dict[str, Any]) -> None:
    for name, count in report["empty"].items():
        if count:
            first = ", ".join(map(repr, report["empty_ids"][name][:5]))
            logger.warning(
                "%d of %d SciCap records have an empty %s (first ids: %s)", count, report["records"], name, first
            )
    if report["dropped"]:
        logger.warning("dropped %d records with an empty selected field (drop_empty=True)", report["dropped"])
    if report["no_image"]:
        logger.warning("%d SciCap records have no image path; written without <image>", report["no_image"])


def build_records(
    figures: list[tuple[str, dict[str, Any]]],
    variant: str = "CTOM",
    seed: int | None = 0,
    *,
    drop_empty: bool = False,
    keep_empty_lines: bool = True,
    with_meta: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Turn normalised figures into instruction records; see `convert_scicap` for the arguments."""
    fields = _variant_fields(variant)
    rng = random.Random(seed)
    report = _new_report(variant, seed, len(figures))
    records = []
    for _, fig in figures:
        # One draw per input record, before any dropping, so the draws line up with the authors' run.
        q_index = QUESTIONS.index(rng.choice(QUESTIONS))
        rec_id = str(fig["id"]) if with_meta else fig["id"]  # canonical ids are strings
        empty = empty_fields(fig, variant)
        for name in empty:
            report["empty"][name] += 1
            report["empty_ids"][name].append(rec_id)
        if empty and drop_empty:
            report["dropped"] += 1
            report["dropped_ids"].append(rec_id)
            continue
        human = QUESTIONS[q_index]
        if fig["image"] is None:
            report["no_image"] += 1
            report["no_image_ids"].append(rec_id)
        else:
            human = f"{human}\n{IMAGE_TOKEN}"
        record: dict[str, Any] = {
            "id": rec_id,
            "image": fig["image"],
            "conversations": [
                {"from": "human", "value": human},
                {"from": "gpt", "value": build_answer(fig, variant, keep_empty_lines)},
            ],
        }
        if with_meta:
            figure_type = fig["figure_type"] if fig["figure_type"] is not None else DEFAULT_FIGURE_TYPE
            record["meta"] = {
                "source": "scicap",
                "variant": variant,
                "system": SYSTEM_MESSAGE,
                "question_index": q_index,
                "figure_type": figure_type if "figure_type" in fields else None,
                "empty_fields": empty,
            }
        records.append(record)
    report["written"] = len(records)
    _warn(report)
    return records, report


def convert_scicap(
    records: list[dict[str, Any]] | dict[str, Any],
    variant: str = "CTOM",
    seed: int | None = 0,
    fields: dict[str, str] | None = None,
    *,
    drop_empty: bool = False,
    keep_empty_lines: bool = True,
    with_meta: bool = True,
    source: str = "records",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Convert SciCap figure records to SciTune concept-alignment instruction records.

    Each output record is ``{"id", "image", "conversations": [human, gpt], "meta"}``: the human turn is a question
    of `QUESTIONS` then ``"\\n<image>"``, the gpt turn `build_answer`; the system message goes to
    ``meta["system"]`` (LLaVA's schema has no system turn). With ``with_meta=False`` a record is exactly what
    the authors' generator writes: no ``meta`` and the id kept as in the source (an int in the Challenge layout);
    otherwise ids are strings, as the canonical schema wants.

    Args:
        records: Figure records (any flat layout, see `FIELD_ALIASES`) or a SciCap Challenge layout dict.
        variant: ``C``, ``CT``, ``CTO`` or ``CTOM`` (`VARIANTS`).
        seed: Seed of the ``random.Random`` that draws one question per input record (0 = the authors' run;
            ``None`` = unseeded).
        fields: ``{canonical: source_key}`` mapping for other layouts, e.g. ``{"caption": "caption_text"}``.
        drop_empty: Drop records whose selected fields include an empty one (default: keep and report them).
        keep_empty_lines: Keep the empty line of an empty field (the authors do); ``False`` omits it.
        with_meta: Canonical records with ``meta`` (default) or the authors' exact layout.
        source: Name used in error messages.

    Returns:
        ``(records, report)``; the report counts records, written records, empty fields per field (with ids),
        dropped records and records without an image.

    Raises:
        DataError: A bad record (its position and id are named).
    """
    fields = _check_fields(fields)
    if isinstance(records, dict) and is_challenge_layout(records):
        mapping = {**CHALLENGE_FIELDS, **fields}
        figures = [(w, normalize_figure(r, w, mapping)) for w, r in challenge_records(records, source)]
    else:
        if not isinstance(records, list):
            raise DataError(f"{source}: expected a list of figure records or the Challenge layout, got {records!r:.60}")
        figures = []
        for i, raw in enumerate(records):
            where = f"{source}: record #{i}"
            figures.append((where, normalize_figure(raw, where, fields, default_id=i)))
    return build_records(
        figures, variant, seed, drop_empty=drop_empty, keep_empty_lines=keep_empty_lines, with_meta=with_meta
    )


def _summary(report: dict[str, Any], out: str) -> dict[str, Any]:
    """The report with id lists cut to their first entries, for printing."""
    summary: dict[str, Any] = {"converter": "scicap", "out": str(out)}
    for key, value in report.items():
        if key == "empty_ids":
            value = {name: ids[:_REPORT_IDS] for name, ids in value.items()}
        elif key.endswith("_ids"):
            value = value[:_REPORT_IDS]
        summary[key] = value
    return summary


@CONVERTERS.register("scicap")
class SciCapConverter:
    """``scitune convert scicap``: SciCap figures -> SciTune concept-alignment (stage 1) instructions."""

    def run(
        self,
        src: str,
        out: str,
        variant: str = "CTOM",
        seed: int = 0,
        fields: dict[str, str] | None = None,
        drop_empty: bool = False,
        keep_empty_lines: bool = True,
        with_meta: bool = True,
    ) -> dict[str, Any]:
        """Convert a SciCap file or folder and write the records atomically.

        Args:
            src: SciCap Challenge JSON, a folder of one-figure JSON files, a JSON list or a JSONL file.
            out: Output path; ``.json`` writes a JSON list (indent 2, like the authors), anything else JSONL.
            variant: ``C``, ``CT``, ``CTO`` or ``CTOM``.
            seed: Seed of the question draw (0 reproduces the authors' output).
            fields: ``{canonical: source_key}`` mapping for other layouts.
            drop_empty: Drop records with an empty selected field instead of keeping them.
            keep_empty_lines: Keep the empty line of an empty field (the authors do).
            with_meta: Canonical records with ``meta``; ``False`` writes the authors' exact records.

        Returns:
            The report of `convert_scicap` with the output path; id lists hold their first 20 ids.
        """
        _variant_fields(variant)
        figures = load_scicap(src, fields)
        records, report = build_records(
            figures, variant, seed, drop_empty=drop_empty, keep_empty_lines=keep_empty_lines, with_meta=with_meta
        )
        if str(out).endswith(".json"):
            # json.dump(..., indent=2) with ASCII escaping and no trailing newline, as the authors write it.
            write_text(out, json.dumps(records, indent=2))
        else:
            write_jsonl(out, records)
        return _summary(report, out)
