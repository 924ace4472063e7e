"""SciCap figures -> SciTune concept-alignment instructions (paper Appendix A), as the authors' generator writes them.

The answer lists the figure type, caption, OCR text and paragraph mentions, one per line; the question is drawn
from the 16 LLaVA questions of the paper's Table 7 with a seeded ``random.Random``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from pathlib import Path
from typing import Any

from scitune.config.schema import DEFAULT_IMAGE_TOKEN as IMAGE_TOKEN
from scitune.data.mixture import DETAIL_QUESTIONS
from scitune.io import DataError, write_jsonl, write_text
from scitune.sources.converters.base import CONVERTERS
from scitune.sources.converters.reading import read_json_source, read_record_source

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

FIELDS: tuple[str, ...] = ("id", "image", "caption", "figure_type", "ocr", "paragraphs", "mentions")
"""Canonical figure fields; ``fields={canonical: source_key}`` maps other layouts (dotted keys reach nested dicts)."""

FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "figure-ID", "figure_id"),
    "image": ("image", "file_name", "image_path", "figure-ID"),
    "caption": ("caption", "caption_no_index", "0-originally-extracted"),
    "figure_type": ("figure_type", "figure-type", "type"),
    "ocr": ("ocr", "ocr_text", "Img-text"),
    "paragraphs": ("paragraphs", "paragraph"),
    "mentions": ("mentions", "mention"),
}
"""Source keys tried in order for a flat record (SciTune names, then SciCap release names)."""

CHALLENGE_FIELDS: dict[str, str] = {
    "id": "id",
    "image": "file_name",
    "caption": "caption_no_index",
    "figure_type": "figure_type",
    "ocr": "ocr",
    "paragraphs": "paragraph",
    "mentions": "mention",
}
"""Keys the authors' generator reads from the SciCap Challenge layout (image entry merged over its annotation)."""

_MISSING = object()
_REPORT_IDS = 20


def _lookup(raw: dict[str, Any], key: str) -> Any:
    """``raw[key]``, or a dotted path into nested dicts; `_MISSING` when absent."""
    node: Any = raw
    for part in [key] if key in raw else key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _check_fields(fields: dict[str, str] | None) -> dict[str, str]:
    fields = dict(fields or {})
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown SciCap field(s) {unknown} in the field mapping; known: {', '.join(FIELDS)}")
    return fields


def _strings(value: Any, where: str, name: str, flatten: bool = False) -> list[str]:
    """A string or a list of strings (lists of lists too when ``flatten``) as a list of strings."""
    if value is _MISSING or value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        out: list[str] = []
        for item in value:
            if flatten and isinstance(item, list):
                out.extend(_strings(item, where, name))
            elif isinstance(item, str):
                out.append(item)
            else:
                raise DataError(f"{where}: field {name!r} must hold strings, got an item of type {type(item).__name__}")
        return out
    raise DataError(f"{where}: field {name!r} must be a string or a list of strings, got {type(value).__name__}")


def normalize_figure(
    raw: Any, where: str, fields: dict[str, str] | None = None, default_id: Any = None
) -> dict[str, Any]:
    """Map one source record to the canonical figure fields.

    Args:
        raw: The source record (a JSON object).
        where: Location used in error messages (file and record).
        fields: ``{canonical: source_key}`` overrides; other fields try `FIELD_ALIASES`.
        default_id: Id used when the record has none (file stem or position).

    Returns:
        ``{"id", "image", "caption", "figure_type", "ocr", "paragraphs", "mentions"}``: ``ocr`` a token list (an
        OCR string is split on whitespace), ``paragraphs`` and ``mentions`` string lists (nested mention lists
        are flattened), ``figure_type`` and ``image`` may be ``None``.

    Raises:
        DataError: The record is not an object, has no caption, or a field has the wrong type.
    """
    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    fields = fields or {}

    def get(name: str) -> Any:
        if name in fields:
            return _lookup(raw, fields[name])
        for key in FIELD_ALIASES[name]:
            value = _lookup(raw, key)
            if value is not _MISSING:
                return value
        return _MISSING

    fig_id = get("id")
    fig_id = default_id if fig_id is _MISSING or fig_id is None else fig_id
    if fig_id is None:
        raise DataError(f"{where}: record has no id (tried {fields.get('id') or FIELD_ALIASES['id']})")
    where = f"{where} (id {fig_id!r})"
    caption = get("caption")
    if caption is _MISSING:
        raise DataError(f"{where}: record has no caption (tried {fields.get('caption') or FIELD_ALIASES['caption']})")
    out: dict[str, Any] = {"id": fig_id}
    for name in ("image", "caption", "figure_type"):
        value = caption if name == "caption" else get(name)
        value = None if value is _MISSING else value
        if value is not None and not isinstance(value, str):
            raise DataError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
        out[name] = value
    if out["caption"] is None:
        raise DataError(f"{where}: caption is null")
    ocr = get("ocr")
    # A whole OCR string is split into tokens so the OCR stays on one tab-joined line, like the release's tokens.
    out["ocr"] = ocr.split() if isinstance(ocr, str) else _strings(ocr, where, "ocr")
    out["paragraphs"] = _strings(get("paragraphs"), where, "paragraphs")
    out["mentions"] = _strings(get("mentions"), where, "mentions", flatten=True)
    return out


def challenge_records(layout: dict[str, Any], source: str) -> list[tuple[str, dict[str, Any]]]:
    """Pair the SciCap Challenge layout's ``images`` and ``annotations`` into flat records, by position.

    The authors' generator pairs entry ``i`` with entry ``i`` (it never reads ``image_id``); a length mismatch or an
    ``image_id`` that disagrees with the paired image's ``id`` would silently mislabel figures, so both raise.

    Args:
        layout: ``{"images": [...], "annotations": [...]}``.
        source: File name for error messages.

    Returns:
        ``(location, merged_record)`` pairs: each annotation's keys overlaid by its image's keys.
    """
    images, annotations = layout.get("images"), layout.get("annotations")
    if not isinstance(images, list) or not isinstance(annotations, list):
        raise DataError(f"{source}: 'images' and 'annotations' must both be lists")
    if len(images) != len(annotations):
        raise DataError(f"{source}: {len(images)} images but {len(annotations)} annotations (paired by position)")
    out = []
    for i, (image, annotation) in enumerate(zip(images, annotations)):
        where = f"{source}: images[{i}]/annotations[{i}]"
        if not isinstance(image, dict) or not isinstance(annotation, dict):
            raise DataError(f"{where}: expected JSON objects")
        if "image_id" in annotation and "id" in image and annotation["image_id"] != image["id"]:
            raise DataError(f"{where}: annotation image_id {annotation['image_id']!r} != image id {image['id']!r}")
        out.append((where, {**annotation, **image}))
    return out


def is_challenge_layout(data: Any) -> bool:
    """Whether ``data`` is the SciCap Challenge layout (``images`` + ``annotations``)."""
    return isinstance(data, dict) and "images" in data and "annotations" in data


def load_scicap(src: str | os.PathLike[str], fields: dict[str, str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Read SciCap-style figure records from a file or folder and normalise them.

    Layouts: the SciCap Challenge JSON (``images`` + ``annotations``); a folder of one-figure JSON files (the
    SciCap release; the file stem is the default id); a JSON list or single object; a JSONL file.

    Args:
        src: File or folder.
        fields: ``{canonical: source_key}`` overrides (see `FIELDS`).

    Returns:
        ``(location, figure)`` pairs, figures as `normalize_figure` returns them.

    Raises:
        DataError: Missing/malformed file, empty folder, or a bad record (file and record named).
    """
    fields = _check_fields(fields)
    src = Path(src)
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
        if not files:
            raise DataError(f"{src}: folder holds no .json figure files")
        return [(str(p), normalize_figure(read_json_source(p), str(p), fields, default_id=p.stem)) for p in files]
    if src.suffix == ".json":
        data = read_json_source(src)
        if is_challenge_layout(data):
            mapping = {**CHALLENGE_FIELDS, **fields}
            return [(w, normalize_figure(r, w, mapping)) for w, r in challenge_records(data, str(src))]
    located = read_record_source(src)
    return [(where, normalize_figure(raw, where, fields, default_id=i)) for i, (where, raw) in enumerate(located)]


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
