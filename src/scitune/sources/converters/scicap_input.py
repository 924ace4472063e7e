"""SciCap figure records in: the field aliases of the known layouts, the SciCap Challenge layout, and the check of
each record (`normalize_figure`) that the SciTune converter (`scitune.sources.converters.scicap`) builds on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from scitune.io import DataError
from scitune.sources.converters.reading import read_json_source, read_record_source

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
