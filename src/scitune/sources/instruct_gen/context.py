"""Symbolic contexts for instruction generation (LLaVA, seed 002): a natural image's captions and object boxes
(COCO-like records or COCO's own files) or a figure's type, caption, OCR text and mentions (SciCap-style records),
rendered as the text a text-only LLM reads."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scitune.io import DataError, read_json, read_records

__all__ = ["CONTEXT_KINDS", "Context", "coco_records", "context_of", "detect_kind", "load_contexts"]

CONTEXT_KINDS = ("natural", "figure")
"""Natural images (captions + object boxes, COCO-like) and scientific figures (SciCap-style records)."""

_MAX_FIELD_CHARS = 1200  # long OCR dumps and paragraphs are cut so that one prompt stays bounded
_MAX_MENTIONS = 5
_NATURAL_KEYS = ("captions", "objects", "boxes")
_FIGURE_KEYS = ("figure_type", "ocr_text", "ocr", "mentions", "paragraphs")


@dataclass(frozen=True)
class Context:
    """One item's symbolic context, rendered as the text the LLM reads."""

    id: str
    kind: str
    text: str
    image: str | None = None


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_FIELD_CHARS else text[:_MAX_FIELD_CHARS].rstrip() + " ..."


def _strings(value: Any, where: str, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v for v in value if v.strip()]
    raise DataError(f"{where}: {key!r} must be a string or a list of strings, got {type(value).__name__}")


def _box(obj: Any, rec: dict[str, Any], where: str, i: int) -> str:
    """``label: [x1, y1, x2, y2]`` normalized to the image (LLaVA's box context)."""
    label = obj.get("label", obj.get("category", obj.get("name"))) if isinstance(obj, dict) else None
    bbox = obj.get("bbox") if isinstance(obj, dict) else None
    if not isinstance(label, str) or not isinstance(bbox, list) or len(bbox) != 4:
        raise DataError(f"{where}: object #{i} needs a 'label' (or 'category') and a 4-number 'bbox'")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox):
        raise DataError(f"{where}: object #{i}: 'bbox' must hold numbers, got {bbox!r}")
    w, h = rec.get("width"), rec.get("height")
    if isinstance(w, int | float) and isinstance(h, int | float) and w > 0 and h > 0:
        x, y, bw, bh = bbox  # COCO: pixels [x, y, width, height]
        bbox = [x / w, y / h, (x + bw) / w, (y + bh) / h]
    elif any(v < 0 or v > 1 for v in bbox):
        raise DataError(
            f"{where}: object #{i}: bbox {bbox!r} is not normalized [x1, y1, x2, y2]; give the record 'width' and "
            "'height' for COCO pixel boxes [x, y, w, h]"
        )
    return f"{label}: [{', '.join(f'{v:.3f}' for v in bbox)}]"


def _natural_text(rec: dict[str, Any], where: str) -> str:
    captions = _strings(rec.get("captions", rec.get("caption")), where, "captions")
    objects = rec.get("objects", rec.get("boxes", []))
    if not isinstance(objects, list):
        raise DataError(f"{where}: 'objects' must be a list of {{'label', 'bbox'}} objects")
    boxes = [_box(o, rec, where, i) for i, o in enumerate(objects)]
    if not captions and not boxes:
        raise DataError(f"{where}: a natural-image context needs 'captions' or 'objects'")
    return "\n".join([*(_cut(c) for c in captions), *([""] if captions and boxes else []), *boxes])


def _figure_text(rec: dict[str, Any], where: str) -> str:
    ftype = rec.get("figure_type")
    caption = _strings(rec.get("caption"), where, "caption")
    ocr = rec.get("ocr_text", rec.get("ocr"))
    ocr_text = " ".join(_strings(ocr, where, "ocr_text"))
    mentions = _strings(rec.get("mentions"), where, "mentions")[:_MAX_MENTIONS]
    paragraphs = [] if mentions else _strings(rec.get("paragraphs"), where, "paragraphs")[:1]
    lines = []
    if isinstance(ftype, str) and ftype.strip():
        lines.append(f"Figure type: {ftype.strip()}")
    if caption:
        lines.append(f"Caption: {_cut(' '.join(caption))}")
    if ocr_text.strip():
        lines.append(f"Text in the figure (OCR): {_cut(ocr_text)}")
    if mentions or paragraphs:
        lines.append("Mentions in the paper:" if mentions else "Paragraph citing the figure:")
        lines.extend(f"- {_cut(m)}" for m in mentions or paragraphs)
    if not caption and not mentions and not paragraphs:
        raise DataError(f"{where}: a figure context needs a 'caption', 'mentions' or 'paragraphs'")
    return "\n".join(lines)


def detect_kind(rec: dict[str, Any]) -> str | None:
    """``natural`` (captions/objects), ``figure`` (figure_type/OCR/mentions/paragraphs) or None (cannot tell)."""
    if any(k in rec for k in _NATURAL_KEYS):
        return "natural"
    if any(k in rec for k in _FIGURE_KEYS):
        return "figure"
    return None


def context_of(rec: dict[str, Any], kind: str = "auto", where: str = "record") -> Context:
    """Render one record's context (see `load_contexts` for the fields read).

    Raises:
        DataError: naming ``where`` when the record has no id, an unknown kind, or no usable context.
    """
    ident = rec.get("id", rec.get("image_id"))
    if isinstance(ident, bool) or not isinstance(ident, str | int) or str(ident) == "":
        raise DataError(f"{where}: needs an 'id' (the cache and the output records are keyed by it)")
    if kind == "auto":
        kind = detect_kind(rec) or ""
        if not kind:
            raise DataError(f"{where}: cannot tell a natural-image from a figure context; set --kind")
    if kind not in CONTEXT_KINDS:
        raise DataError(f"unknown context kind {kind!r}; use auto, {', '.join(CONTEXT_KINDS)}")
    text = _natural_text(rec, where) if kind == "natural" else _figure_text(rec, where)
    image = rec.get("image", rec.get("file_name"))
    return Context(str(ident), kind, text, image if isinstance(image, str) and image else None)


def coco_records(captions_path: str | os.PathLike[str], instances_path: str | os.PathLike[str] | None = None):
    """Context records from COCO's ``captions_*.json`` (and ``instances_*.json`` for the boxes), one per image
    with at least one caption: ``{"id", "image", "width", "height", "captions", "objects"}``."""
    caps = read_json(captions_path)
    if not isinstance(caps, dict) or not isinstance(caps.get("images"), list):
        raise DataError(f"{captions_path}: expected a COCO captions file with 'images' and 'annotations'")
    images = {im["id"]: im for im in caps["images"] if isinstance(im, dict) and "id" in im}
    captions: dict[Any, list[str]] = {}
    for ann in caps.get("annotations", []):
        if isinstance(ann, dict) and ann.get("image_id") in images and isinstance(ann.get("caption"), str):
            captions.setdefault(ann["image_id"], []).append(ann["caption"].strip())
    objects: dict[Any, list[dict[str, Any]]] = {}
    if instances_path is not None:
        inst = read_json(instances_path)
        if not isinstance(inst, dict) or not isinstance(inst.get("annotations"), list):
            raise DataError(f"{instances_path}: expected a COCO instances file with 'annotations' and 'categories'")
        names = {c["id"]: c["name"] for c in inst.get("categories", []) if isinstance(c, dict)}
        for ann in inst["annotations"]:
            if isinstance(ann, dict) and ann.get("image_id") in captions and ann.get("category_id") in names:
                objects.setdefault(ann["image_id"], []).append(
                    {"label": names[ann["category_id"]], "bbox": ann["bbox"]}
                )
    return [
        {"id": str(i), "image": images[i].get("file_name"), "width": images[i].get("width"),
         "height": images[i].get("height"), "captions": caps_, "objects": objects.get(i, [])}
        for i, caps_ in captions.items()
    ]  # fmt: skip


def load_contexts(
    path: str | os.PathLike[str], kind: str = "auto", coco_instances: str | None = None, limit: int | None = None
) -> list[Context]:
    """Read the items to generate for.

    Layouts: JSONL or a JSON list of records, or COCO's captions JSON (``images`` + ``annotations``; boxes from
    ``coco_instances``). Natural-image records: ``id``, ``image``, ``captions`` (or ``caption``), ``objects`` (or
    ``boxes``) of ``{"label" (or "category"), "bbox"}``; boxes are normalized ``[x1, y1, x2, y2]``, or COCO pixel
    ``[x, y, w, h]`` when the record has ``width`` and ``height``. Figure records (SciCap-style, e.g. SciFig's
    ``scicap/*.jsonl``): ``id``, ``image``, ``caption``, ``figure_type``, ``ocr_text`` (or ``ocr``), ``mentions``,
    ``paragraphs`` (used when there are no mentions).

    Raises:
        DataError: naming the file and record of a record without id or usable context, or a duplicate id.
    """
    data = None
    if Path(path).suffix == ".json":
        data = read_json(path)
    if isinstance(data, dict) and "images" in data and "annotations" in data:
        located = [(f"{path}: image {r['id']}", r) for r in coco_records(path, coco_instances)]
    else:
        if coco_instances is not None:
            raise DataError(f"{path}: --coco_instances needs --data to be a COCO captions file")
        located = read_records(path)
    located = located[:limit] if limit is not None else located
    out: list[Context] = []
    seen: dict[str, str] = {}
    for where, rec in located:
        ctx = context_of(rec, kind, where)
        if ctx.id in seen:
            raise DataError(f"{where}: duplicate id {ctx.id!r} (first at {seen[ctx.id]})")
        seen[ctx.id] = where
        out.append(ctx)
    return out
