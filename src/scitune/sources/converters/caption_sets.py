"""Captioning data sets read as released: one `CaptionItem` per image with all its reference captions, whatever the
layout (Karpathy split JSON, COCO-style / NoCaps annotations, LLaVA's CC3M-595K / LLaVA-Pretrain chat files, or
plain caption records), and the training records made from them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scitune.config.schema import DEFAULT_IMAGE_TOKEN as IMAGE_TOKEN
from scitune.io import DataError
from scitune.sources.converters.reading import read_json_source, read_record_source

__all__ = [
    "CAPTION_QUESTION",
    "CaptionItem",
    "CaptionSet",
    "caption_records",
    "detect_caption_layout",
    "read_caption_set",
]

CAPTION_QUESTION = "Provide a one-sentence caption for the provided image."
"""The instruction asked with each image (LLaVA-1.5's COCO / Flickr30k / NoCaps caption prompt)."""
KNOWN_FILES = ("dataset_coco.json", "dataset_flickr30k.json", "karpathy_coco.json", "nocaps_val_4500_captions.json",
               "chat.json", "blip_laion_cc_sbu_558k.json")  # fmt: skip
"""Files a ``--data`` folder is searched for, in this order."""


@dataclass
class CaptionItem:
    """One image and its reference captions."""

    id: str
    image: str
    """Image path relative to the set's image root."""
    references: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    """Layout-specific fields (``split``, ``domain`` for NoCaps, ``cocoid``, ...)."""


@dataclass
class CaptionSet:
    """The items of a caption file with its layout name and where its images usually are."""

    layout: str
    """``karpathy-coco``, ``karpathy-flickr30k``, ``nocaps``, ``coco-captions``, ``llava-pretrain`` or ``records``."""
    path: Path
    items: list[CaptionItem]
    image_roots: list[Path]
    """Folders tried, in order, for a relative image path when no ``--image_root`` is given."""


def _locate(src: Path) -> Path:
    if not src.is_dir():
        return src
    for name in KNOWN_FILES:
        if (src / name).is_file():
            return src / name
    raise DataError(f"{src}: folder holds none of the caption files scitune reads ({', '.join(KNOWN_FILES)})")


def detect_caption_layout(data: Any) -> str | None:
    """The layout of a parsed JSON document, or None when it is none of the released caption layouts."""
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        first = data["images"][0] if data["images"] else {}
        if isinstance(first, dict) and "sentences" in first:
            return "karpathy"
        if "annotations" in data or (isinstance(first, dict) and "domain" in first):
            return "coco"
    if isinstance(data, list) and data and isinstance(data[0], dict):
        if "conversations" in data[0]:
            return "llava-pretrain"
        if "caption" in data[0] or "captions" in data[0]:
            return "records"
    return None


def read_caption_set(src: str | os.PathLike[str], split: str | None = None) -> CaptionSet:
    """Read a caption data set in any released layout.

    Args:
        src: a caption file or a folder holding one of `KNOWN_FILES`. Layouts: Karpathy split JSON
            (``dataset_coco.json``, ``dataset_flickr30k.json``), COCO-style annotations (``captions_val2014.json``)
            and NoCaps' ``nocaps_val_4500_captions.json`` (its ``domain`` per image kept in ``meta``), LLaVA's
            ``chat.json`` (CC3M-595K) / ``blip_laion_cc_sbu_558k.json`` (the assistant turn is the reference),
            or caption records (JSON list or JSONL of ``{"id", "image", "caption" | "captions"}``).
        split: Karpathy split(s), comma-separated (``test``, ``val``, ``train,restval``); default ``test``.
            Other layouts have one split per file and refuse a split.

    Raises:
        DataError: unreadable file, unknown layout, a record missing a field (file, record and field named).
    """
    from scitune.sources.converters import karpathy, llava_pretrain, nocaps

    path = _locate(Path(src))
    if path.suffix == ".jsonl":
        return _records_set(path, read_record_source(path), split)
    data = read_json_source(path)
    layout = detect_caption_layout(data)
    if layout == "karpathy":
        return karpathy.karpathy_set(path, data, split or "test")
    if split is not None:
        raise DataError(f"{path}: --split {split!r} applies to Karpathy split files only; this file is one split")
    if layout == "coco":
        return nocaps.coco_caption_set(path, data)
    if layout == "llava-pretrain":
        return llava_pretrain.pretrain_caption_set(path, data)
    if layout == "records":
        return _records_set(path, [(f"{path}: record #{i}", r) for i, r in enumerate(data)], None)
    raise DataError(f"{path}: not a caption layout scitune reads (Karpathy split JSON, COCO-style or NoCaps "
                    "annotations, LLaVA chat.json, or records with 'image' and 'caption'/'captions')")  # fmt: skip


def _records_set(path: Path, located: list[tuple[str, Any]], split: str | None) -> CaptionSet:
    if split is not None:
        raise DataError(f"{path}: --split {split!r} applies to Karpathy split files only")
    items = []
    for i, (where, rec) in enumerate(located):
        if not isinstance(rec, dict) or not isinstance(rec.get("image"), str):
            raise DataError(f"{where}: needs an 'image' path")
        refs = rec.get("captions", rec.get("caption"))
        refs = [refs] if isinstance(refs, str) else refs
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise DataError(f"{where}: needs 'caption' (a string) or 'captions' (a non-empty list of strings)")
        meta = {k: v for k, v in rec.items() if k not in ("id", "image", "caption", "captions")}
        items.append(CaptionItem(str(rec.get("id", i)), rec["image"], list(refs), meta))
    return CaptionSet("records", path, unique_ids(items, path), [path.parent, path.parent / "images"])


def unique_ids(items: list[CaptionItem], path: Path) -> list[CaptionItem]:
    """``items`` unchanged, or `DataError` naming the first id that occurs twice."""
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise DataError(f"{path}: image id {item.id!r} occurs twice")
        seen.add(item.id)
    return items


def caption_records(
    items: list[CaptionItem], source: str, question: str = CAPTION_QUESTION, all_references: bool = True
) -> list[dict[str, Any]]:
    """Training records (LLaVA conversation schema) from caption items.

    Args:
        items: the images and their captions.
        source: ``meta["source"]`` of each record.
        question: the instruction; the image placeholder follows it on a new line.
        all_references: one record per reference caption (id ``<image id>-<k>``), as caption training uses every
            caption; False: one record per image with its first caption (id = the image id).
    """
    records = []
    for item in items:
        refs = item.references if all_references else item.references[:1]
        for k, ref in enumerate(refs):
            records.append({
                "id": f"{item.id}-{k}" if all_references else item.id,
                "image": item.image,
                "conversations": [{"from": "human", "value": f"{question}\n{IMAGE_TOKEN}"},
                                  {"from": "gpt", "value": ref.strip()}],
                "meta": {"source": source, "image_id": item.id, **item.meta},
            })  # fmt: skip
    return records
