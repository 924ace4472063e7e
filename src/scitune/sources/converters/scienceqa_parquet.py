"""ScienceQA as released on the Hugging Face Hub (``derek-thomas/ScienceQA``): one parquet file per split
(``data/{train,validation,test}-*.parquet``) with the image bytes inside, read into the official ``problems.json``
schema so `scitune.sources.converters.scienceqa` converts it exactly as it converts the official tree."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from scitune.io import DataError, atomic_path

PARQUET_COLUMNS = ("image", "question", "choices", "answer", "hint", "task", "grade", "subject", "topic", "category",
                   "skill", "lecture", "solution")  # fmt: skip
"""The columns of the Hub release, in its order; ``image`` is ``{"bytes", "path"}`` or null (no image)."""
SPLIT_NAMES = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
"""``--split`` name (the official ``pid_splits.json`` names are accepted too) -> the Hub release's file prefix."""
IMAGE_NAME = "image.png"
"""The file name every extracted image gets, as in the official tree (``<pid>/image.png``)."""


def is_scienceqa_parquet(src: str | os.PathLike[str]) -> bool:
    """True when ``src`` is a ``.parquet`` file or a folder holding some (directly or in ``data/``)."""
    path = Path(src)
    if path.is_file():
        return path.suffix == ".parquet"
    return path.is_dir() and bool(parquet_files(path, None))


def parquet_files(folder: Path, split: str | None) -> list[Path]:
    """The parquet files of ``split`` (all splits for None) in ``folder`` or ``folder/data``, sorted."""
    prefix = "" if split is None else f"{SPLIT_NAMES.get(split, split)}-"
    found: list[Path] = []
    for where in (folder, folder / "data"):
        if where.is_dir():
            found += sorted(p for p in where.glob("*.parquet") if p.name.startswith(prefix))
    return found


def _read_table(files: list[Path]) -> list[dict[str, Any]]:
    from scitune.extras import require

    require("reading ScienceQA's parquet release", "pyarrow")
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for f in files:
        try:
            table = pq.read_table(f)
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError subclasses on damaged files
            raise DataError(f"{f}: not a readable parquet file ({e})") from None
        missing = [c for c in PARQUET_COLUMNS if c not in table.column_names]
        if missing:
            raise DataError(f"{f}: not ScienceQA's parquet release: columns {', '.join(missing)} are missing")
        rows += table.select(list(PARQUET_COLUMNS)).to_pylist()
    return rows


def _problem(row: dict[str, Any], split: str) -> dict[str, Any]:
    """One parquet row in the official schema (``image`` = ``image.png`` or None; ``split`` as pid_splits.json)."""
    problem = {k: row[k] for k in PARQUET_COLUMNS if k != "image"}
    problem["choices"] = list(row["choices"]) if row["choices"] is not None else None
    problem["image"] = IMAGE_NAME if _image_bytes(row) is not None else None
    problem["split"] = {"validation": "val"}.get(split, split)
    return problem


def _image_bytes(row: dict[str, Any]) -> bytes | None:
    image = row.get("image")
    if isinstance(image, dict):
        return image.get("bytes") or None
    return image if isinstance(image, bytes) and image else None


def load_scienceqa_parquet(src: str | os.PathLike[str], split: str) -> tuple[dict[str, dict[str, Any]], list[str],
                                                                               dict[str, bytes]]:  # fmt: skip
    """Read one split of the parquet release as official problems.

    Args:
        src: a ``.parquet`` file, or the release folder (``data/<split>-*.parquet`` inside).
        split: ``train``, ``val`` / ``validation`` or ``test`` (ignored when ``src`` is one file).

    Returns:
        ``(problems, pids, images)``: pid -> problem in the ``problems.json`` schema, the pids in file order and pid
        -> encoded image bytes for the problems that have one. The release carries no pid, so a problem's pid is
        ``<split>-<row>`` (row = its 0-based position in the split's files).

    Raises:
        DataError: no parquet file for the split, a file that is not the release's layout.
    """
    path = Path(src)
    if path.is_file():
        files, name = [path], path.name.split("-")[0]
    else:
        files, name = parquet_files(path, split), SPLIT_NAMES.get(split, split)
        if not files:
            known = sorted({p.name.split("-")[0] for p in parquet_files(path, None)})
            raise DataError(f"{path}: no parquet file for split {split!r} (found splits: {', '.join(known) or 'none'})")
    problems, pids, images = {}, [], {}
    short = {"validation": "val"}.get(name, name)
    for row_index, row in enumerate(_read_table(files)):
        pid = f"{short}-{row_index}"
        problems[pid] = _problem(row, name)
        data = _image_bytes(row)
        if data is not None:
            images[pid] = data
        pids.append(pid)
    return problems, pids, images


def extract_images(images: dict[str, bytes], image_root: str | os.PathLike[str]) -> int:
    """Write each problem's image as ``<image_root>/<pid>/image.png`` atomically (PNG bytes as released, other
    formats re-encoded as PNG); return how many were written. An identical file already there is left alone."""
    root = Path(image_root)
    written = 0
    for pid, data in images.items():
        target = root / pid / IMAGE_NAME
        encoded = data if data[:8] == b"\x89PNG\r\n\x1a\n" else _to_png(pid, data)
        if target.is_file() and target.read_bytes() == encoded:
            continue
        with atomic_path(target) as tmp:
            tmp.write_bytes(encoded)
        written += 1
    return written


def _to_png(pid: str, data: bytes) -> bytes:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            buf = io.BytesIO()
            im.convert("RGB").save(buf, format="PNG")
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, ValueError on bad bytes
        raise DataError(f"problem {pid!r}: its image bytes are not a readable image ({e})") from None
    return buf.getvalue()


def load_parquet_split(src: str | os.PathLike[str], split: str, image_root: str | os.PathLike[str] | None,
                       out: str | os.PathLike[str]) -> tuple[Any, Path]:  # fmt: skip
    """One split of the parquet release as a `ScienceQASplit`, its images extracted for training.

    Args:
        src: the release folder or one of its parquet files.
        split: the split (see `load_scienceqa_parquet`).
        image_root: where ``<pid>/image.png`` files go; default ``<folder of out>/images``.
        out: the converter's output file (only its folder is used).

    Returns:
        ``(split, image_root)``.
    """
    from scitune.sources.converters.scienceqa import ScienceQASplit, validate_problem

    problems, pids, images = load_scienceqa_parquet(src, split)
    for pid in pids:
        validate_problem(pid, problems[pid], str(src))
    root = Path(image_root) if image_root is not None else Path(out).parent / "images"
    extract_images(images, root)
    return ScienceQASplit(problems, pids, []), root
