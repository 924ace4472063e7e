"""COCO and Flickr30k captions in Karpathy's split JSON (``dataset_coco.json``, ``dataset_flickr30k.json``):
``{"images": [{"filepath"?, "filename", "split", "sentences": [{"raw", "tokens", ...}], "cocoid"?, "imgid"}],
"dataset"}``, read as released, and ``scitune convert karpathy`` to training records."""

from __future__ import annotations

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

SPLITS = ("train", "restval", "val", "test")
"""The split names of Karpathy's files (``restval``: the rest of COCO val2014, used for training)."""


def _item(path: Path, i: int, img: Any, dataset: str) -> CaptionItem:
    where = f"{path}: images[{i}]"
    if not isinstance(img, dict) or not isinstance(img.get("filename"), str):
        raise DataError(f"{where}: needs a 'filename'")
    sentences = img.get("sentences")
    if not isinstance(sentences, list) or not sentences:
        raise DataError(f"{where} ({img['filename']}): needs a non-empty 'sentences' list")
    refs = []
    for k, s in enumerate(sentences):
        if not isinstance(s, dict) or not isinstance(s.get("raw"), str):
            raise DataError(f"{where} ({img['filename']}): sentences[{k}] needs a 'raw' caption")
        refs.append(s["raw"])
    filepath = img.get("filepath")
    image = f"{filepath}/{img['filename']}" if filepath else img["filename"]
    # COCO images are known by their COCO id (what caption result files carry); Flickr30k by the file's stem
    ident = str(img["cocoid"]) if "cocoid" in img else Path(img["filename"]).stem
    meta = {"split": img.get("split"), "imgid": img.get("imgid"), "filename": img["filename"], "dataset": dataset}
    if "cocoid" in img:
        meta["cocoid"] = img["cocoid"]
    return CaptionItem(ident, image, refs, meta)


def parse_splits(split: str) -> list[str]:
    """``"train,restval"`` -> ``["train", "restval"]``, each checked against `SPLITS`."""
    names = [s.strip() for s in split.split(",") if s.strip()]
    bad = [s for s in names if s not in SPLITS]
    if not names or bad:
        raise DataError(f"unknown Karpathy split {split!r}; known: {', '.join(SPLITS)} (comma-separate several)")
    return names


def karpathy_set(path: Path, data: dict[str, Any], split: str) -> CaptionSet:
    """The images of ``split`` (comma-separated splits allowed) of a parsed Karpathy file, in file order."""
    wanted = set(parse_splits(split))
    dataset = str(data.get("dataset", "coco"))
    items = [_item(path, i, img, dataset) for i, img in enumerate(data["images"])
             if isinstance(img, dict) and img.get("split") in wanted]  # fmt: skip
    if not items:
        found = sorted({str(img.get("split")) for img in data["images"] if isinstance(img, dict)})
        raise DataError(f"{path}: no image in split {split!r} (the file has: {', '.join(found)})")
    roots = [path.parent, path.parent / "images"]
    if dataset == "flickr30k":
        roots.insert(0, path.parent / "flickr30k-images")
    return CaptionSet(f"karpathy-{dataset}", path, unique_ids(items, path), roots)


def load_karpathy(path: str, split: str = "test") -> CaptionSet:
    """Read ``split`` of a Karpathy split file (see `karpathy_set`)."""
    data = read_json_source(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: not a Karpathy split file (expected an object with an 'images' list)")
    return karpathy_set(Path(path), data, split)


@CONVERTERS.register("karpathy")
class KarpathyConverter:
    """``scitune convert karpathy``: COCO / Flickr30k Karpathy split JSON -> image-caption training records."""

    def run(self, src: str, out: str, split: str = "train,restval", question: str = CAPTION_QUESTION,
            all_references: bool = True) -> dict[str, Any]:  # fmt: skip
        """Convert one or more splits and write the records atomically.

        Args:
            src: ``dataset_coco.json`` or ``dataset_flickr30k.json`` as released.
            out: Output path; ``.json`` writes a JSON list, anything else JSONL.
            split: Split(s), comma-separated: train, restval, val, test (COCO training = ``train,restval``).
            question: The instruction of each record; the ``<image>`` placeholder follows it on a new line.
            all_references: One record per caption (5 per image); False: the first caption of each image only.

        Returns:
            Summary: output path, layout, images, records.
        """
        cs = load_karpathy(src, split)
        records = caption_records(cs.items, cs.layout, question, all_references)
        write_record_file(out, records)
        return {"converter": "karpathy", "out": str(out), "layout": cs.layout, "split": split,
                "images": len(cs.items), "records": len(records)}  # fmt: skip
