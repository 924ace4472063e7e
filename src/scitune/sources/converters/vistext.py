"""VisText charts -> canonical captioning records: the rendered chart image and its L1 or L2/L3 caption.

VisText's release (github.com/mitvis/vistext): ``data_{train,validation,test}.json``, each a JSON list of
``{"caption_id", "img_id", "scenegraph", "datatable", "caption_L1", "caption_L2L3", "L1_properties"}``, and the
rasterized charts at ``images/<img_id>.png`` beside them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from scitune.config.schema import DEFAULT_IMAGE_TOKEN as IMAGE_TOKEN
from scitune.images import resolve_image_path
from scitune.io import DataError
from scitune.sources.converters.base import CONVERTERS
from scitune.sources.converters.reading import read_json_source, write_record_file

logger = logging.getLogger(__name__)

LEVELS: dict[str, tuple[str, ...]] = {"L1": ("caption_L1",), "L2L3": ("caption_L2L3",),
                                      "L1L2L3": ("caption_L1", "caption_L2L3")}  # fmt: skip
"""Caption level -> the fields it joins (with one space, as VisText's non-prefix-tuned models do); ``both`` writes
an ``L1`` and an ``L2L3`` record per chart with ids ``<caption_id>_L1`` / ``_L2L3``, as VisText's prefix tuning."""
SPLIT_FILES = {"train": "data_train.json", "val": "data_validation.json", "validation": "data_validation.json",
               "test": "data_test.json"}  # fmt: skip
DEFAULT_PROMPT = "Write a caption for this chart."
_REQUIRED = ("img_id", "caption_L1", "caption_L2L3")
_REPORT_IDS = 20


def _levels(level: str) -> tuple[str, ...]:
    if level == "both":
        return ("L1", "L2L3")
    if level not in LEVELS:
        raise ValueError(f"unknown VisText caption level {level!r}; known: {', '.join([*LEVELS, 'both'])}")
    return (level,)


def load_vistext(src: str | Path, split: str = "test") -> tuple[Path, list[tuple[str, dict[str, Any]]]]:
    """Read a VisText split file.

    Args:
        src: A ``data_<split>.json`` file, or the folder holding it (VisText's ``data/``).
        split: ``train``, ``val`` (``validation``) or ``test``; used when ``src`` is a folder.

    Returns:
        ``(folder, located)``: the folder that holds ``images/`` and ``(location, record)`` pairs.

    Raises:
        DataError: Missing file, not a JSON list, non-UTF-8 text, or a record that is not an object or lacks
            ``img_id`` / a caption (file, record index and caption_id named).
    """
    src = Path(src)
    if src.is_dir():
        if split not in SPLIT_FILES:
            raise ValueError(f"unknown VisText split {split!r}; known: {', '.join(SPLIT_FILES)}")
        src = src / SPLIT_FILES[split]
    data = read_json_source(src)
    if not isinstance(data, list):
        raise DataError(f"{src}: expected VisText's JSON list of chart records, got {type(data).__name__}")
    located = []
    for i, rec in enumerate(data):
        where = f"{src}: record #{i}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        where += f" (caption_id {rec.get('caption_id', rec.get('img_id'))!r})"
        for key in _REQUIRED:
            if key not in rec:
                raise DataError(f"{where}: missing field {key!r} (VisText records have {', '.join(_REQUIRED)})")
        for key in _REQUIRED[1:]:
            if not isinstance(rec[key], str):
                raise DataError(f"{where}: field {key!r} must be a string, got {type(rec[key]).__name__}")
        located.append((where, rec))
    return src.parent, located


def convert_vistext(
    located: list[tuple[str, dict[str, Any]]],
    level: str = "L2L3",
    prompt: str = DEFAULT_PROMPT,
    image_root: str | Path | None = None,
    drop_empty: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """VisText chart records -> captioning records.

    Each record is ``{"id", "image": "images/<img_id>.png", "conversations": [human, gpt], "meta"}``: the human
    turn is ``"<image>\\n" + prompt``, the gpt turn the caption of ``level``; ``meta`` keeps the source, level,
    ``img_id``, both captions and ``L1_properties`` (chart type, title, axes, scales) for the evaluation.

    Args:
        located: ``(location, record)`` pairs from `load_vistext`.
        level: ``L1``, ``L2L3``, ``L1L2L3`` or ``both`` (see `LEVELS`).
        prompt: The instruction of the human turn.
        image_root: When given, each chart image must exist at ``image_root/images/<img_id>.png``.
        drop_empty: Drop records whose caption is empty (default: keep them; they are reported either way).

    Returns:
        ``(records, report)``; the report counts charts, records, empty captions (with ids) and dropped ones.
    """
    levels = _levels(level)
    records, empty = [], []
    for where, rec in located:
        image = f"images/{rec['img_id']}.png"
        if image_root is not None:
            try:
                path = resolve_image_path(image_root, image)
            except DataError as e:
                raise DataError(f"{where}: {e}") from None
            if not path.is_file():
                raise DataError(f"{where}: chart image {path} not found")
        base_id = str(rec.get("caption_id", rec["img_id"]))
        for lv in levels:
            caption = " ".join(rec[key].strip() for key in LEVELS[lv])
            rec_id = f"{base_id}_{lv}" if len(levels) > 1 else base_id
            if not caption.strip():
                empty.append(rec_id)
                if drop_empty:
                    continue
            meta = {"source": "vistext", "level": lv, "img_id": rec["img_id"], "caption_L1": rec["caption_L1"],
                    "caption_L2L3": rec["caption_L2L3"], "L1_properties": rec.get("L1_properties")}  # fmt: skip
            records.append({"id": rec_id, "image": image, "meta": meta, "conversations": [
                {"from": "human", "value": f"{IMAGE_TOKEN}\n{prompt}"}, {"from": "gpt", "value": caption}]})  # fmt: skip
    if empty:
        logger.warning("%d VisText captions are empty (first ids: %s)", len(empty), empty[:5])
    report = {"charts": len(located), "records": len(records), "level": level, "empty": len(empty),
              "empty_ids": empty[:_REPORT_IDS], "dropped": len(empty) if drop_empty else 0}  # fmt: skip
    return records, report


@CONVERTERS.register("vistext")
class VisTextConverter:
    """``scitune convert vistext``: VisText charts -> chart-captioning records (L1 or L2/L3 captions)."""

    def run(
        self,
        src: str,
        out: str,
        split: str = "test",
        level: str = "L2L3",
        prompt: str = DEFAULT_PROMPT,
        check_images: bool = True,
        drop_empty: bool = False,
    ) -> dict[str, Any]:
        """Convert one VisText split and write the records atomically.

        Args:
            src: VisText's ``data/`` folder (holding ``data_<split>.json`` and ``images/``) or one split file.
            out: Output path; ``.json`` writes a JSON list, anything else JSONL. Image paths are relative to the
                folder of the split file: pass it as ``--image_root`` when training or evaluating.
            split: ``train``, ``val`` or ``test`` (when ``src`` is a folder).
            level: ``L1`` (chart type, title, axes), ``L2L3`` (trends and statistics), ``L1L2L3`` (both joined)
                or ``both`` (two records per chart).
            prompt: The instruction of the human turn.
            check_images: Fail on the first chart whose ``images/<img_id>.png`` is missing.
            drop_empty: Drop records with an empty caption (reported either way).

        Returns:
            The conversion report with the output path and the image folder.
        """
        _levels(level)
        folder, located = load_vistext(src, split)
        records, report = convert_vistext(located, level, prompt, folder if check_images else None, drop_empty)
        write_record_file(out, records)
        return {"converter": "vistext", "out": str(out), "image_root": str(folder), **report}
