"""COCO-style caption annotations read as released: NoCaps validation (``nocaps_val_4500_captions.json``: ``images``
with ``id``, ``file_name``, ``open_images_id`` and ``domain`` = in-domain | near-domain | out-domain, and
``annotations`` with ``image_id`` and ``caption``) and COCO's own ``captions_val2014.json``."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from scitune.io import DataError
from scitune.sources.converters.base import CONVERTERS
from scitune.sources.converters.caption_sets import (
    CAPTION_QUESTION,
    CaptionItem,
    CaptionSet,
    caption_records,
    unique_ids,
)
from scitune.sources.converters.reading import read_json_source, write_record_file

DOMAINS = ("in-domain", "near-domain", "out-domain")
"""NoCaps' image domains, in the order its leaderboard lists them."""


def coco_caption_set(path: Path, data: dict[str, Any]) -> CaptionSet:
    """The images of a parsed COCO-style caption file with their captions (NoCaps when images carry a domain).

    Raises:
        DataError: no ``annotations`` (NoCaps' test file keeps its captions private), an image or annotation
            missing a field, an annotation for an unknown image, an image without any caption, an unknown domain.
    """
    if not isinstance(data.get("annotations"), list):
        raise DataError(f"{path}: has no 'annotations' (image info only, e.g. NoCaps' test split, whose captions "
                        "are private): use the validation file nocaps_val_4500_captions.json")  # fmt: skip
    captions: dict[Any, list[str]] = defaultdict(list)
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or not isinstance(ann.get("caption"), str):
            raise DataError(f"{path}: annotations[{i}] needs 'image_id' and a 'caption' string")
        captions[ann["image_id"]].append(ann["caption"])
    nocaps = any(isinstance(img, dict) and "domain" in img for img in data["images"])
    items, known = [], set()
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
            raise DataError(f"{path}: images[{i}] needs 'id' and 'file_name'")
        known.add(img["id"])
        if not captions.get(img["id"]):
            raise DataError(f"{path}: image {img['id']!r} ({img['file_name']}) has no caption in 'annotations'")
        meta = {k: img[k] for k in ("open_images_id", "coco_url", "height", "width") if k in img}
        if nocaps:
            if img.get("domain") not in DOMAINS:
                raise DataError(f"{path}: image {img['id']!r}: 'domain' must be one of {', '.join(DOMAINS)}, "
                                f"got {img.get('domain')!r}")  # fmt: skip
            meta["domain"] = img["domain"]
        items.append(CaptionItem(str(img["id"]), img["file_name"], captions[img["id"]], meta))
    orphans = [k for k in captions if k not in known]
    if orphans:
        raise DataError(f"{path}: {len(orphans)} annotation image_id(s) match no image, e.g. {orphans[0]!r}")
    roots = [path.parent / d for d in ("validation", "val", "images", "val2014")] + [path.parent]
    return CaptionSet("nocaps" if nocaps else "coco-captions", path, unique_ids(items, path), roots)


def load_coco_captions(path: str) -> CaptionSet:
    """Read a NoCaps / COCO-style caption file (see `coco_caption_set`)."""
    data = read_json_source(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: not a COCO-style caption file (expected an object with 'images' and 'annotations')")
    return coco_caption_set(Path(path), data)


@CONVERTERS.register("nocaps")
class NoCapsConverter:
    """``scitune convert nocaps``: NoCaps / COCO-style caption annotations -> image-caption records."""

    def run(self, src: str, out: str, question: str = CAPTION_QUESTION, all_references: bool = True,
            domain: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Convert the file and write the records atomically (``meta.domain`` keeps NoCaps' domain).

        Args:
            src: ``nocaps_val_4500_captions.json`` or ``captions_val2014.json`` as released.
            out: Output path; ``.json`` writes a JSON list, anything else JSONL.
            question: The instruction of each record; the ``<image>`` placeholder follows it on a new line.
            all_references: One record per caption; False: the first caption of each image only.
            domain: Keep only one NoCaps domain (in-domain, near-domain, out-domain).

        Returns:
            Summary: output path, layout, images per domain, records.
        """
        cs = load_coco_captions(src)
        items = cs.items
        if domain is not None:
            if domain not in DOMAINS or cs.layout != "nocaps":
                raise DataError(f"--domain {domain!r}: needs a NoCaps file and one of {', '.join(DOMAINS)}")
            items = [it for it in items if it.meta["domain"] == domain]
        records = caption_records(items, cs.layout, question, all_references)
        write_record_file(out, records)
        per_domain = {d: sum(it.meta.get("domain") == d for it in items) for d in DOMAINS}
        return {"converter": "nocaps", "out": str(out), "layout": cs.layout, "images": len(items),
                "records": len(records), **({"domains": per_domain} if cs.layout == "nocaps" else {})}  # fmt: skip
