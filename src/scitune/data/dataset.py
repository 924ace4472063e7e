"""Reading, validating and serving training records: a full report of bad samples before training starts."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from scitune.data.conversation import place_image_tokens, record_images, record_messages
from scitune.data.tokenize import Encoded, TextEncoder
from scitune.images import DEFAULT_MAX_PIXELS, open_image, resolve_image_path
from scitune.io import DataError, check_input_file, not_utf8, read_json


@dataclass
class Problem:
    """One bad record: where it is, its id, and what is wrong."""

    location: str
    record_id: str
    message: str

    def __str__(self) -> str:
        return f"{self.location} [id={self.record_id}]: {self.message}"


@dataclass
class ValidationReport:
    """Outcome of checking every record of a data file."""

    path: str
    total: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self, limit: int = 50) -> str:
        lines = [f"{self.path}: {self.total} records, {len(self.problems)} bad"]
        lines += [f"  {p}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more")
        return "\n".join(lines)


def scan_file(path: str | os.PathLike[str]) -> tuple[list[tuple[str, dict]], list[Problem]]:
    """Read a JSONL or LLaVA JSON-list file, collecting bad lines (malformed JSON, bytes that are not UTF-8) as
    problems instead of stopping; a file with no records at all is an error."""
    path = check_input_file(path, "data file")
    records: list[tuple[str, dict]] = []
    problems: list[Problem] = []
    if path.suffix == ".json":
        data = read_json(path)
        data = data if isinstance(data, list) else [data]
        for i, rec in enumerate(data):
            loc = f"{path}: record #{i}"
            if isinstance(rec, dict):
                records.append((loc, rec))
            else:
                problems.append(Problem(loc, "?", f"expected a JSON object, got {type(rec).__name__}"))
    else:
        offset = 0
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                loc = f"{path}:{lineno}"
                start, offset = offset, offset + len(raw)
                try:
                    line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    byte = raw[e.start] if e.start < len(raw) else None
                    problems.append(
                        Problem(loc, "?", str(not_utf8(path, lineno, start + e.start, byte)).split(": ", 2)[-1])
                    )
                    continue
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    problems.append(Problem(loc, "?", f"malformed JSON line: {e.msg} (column {e.colno})"))
                    continue
                if not isinstance(rec, dict):
                    problems.append(Problem(loc, "?", f"expected a JSON object, got {type(rec).__name__}"))
                    continue
                records.append((loc, rec))
    if not records and not problems:
        raise DataError(f"{path}: no records (the file is empty)")
    return records, problems


def load_image(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image as RGB (`scitune.images.open_image`); `DataError` naming the file if bad."""
    return open_image(path, max_pixels)


@dataclass(frozen=True)
class ImageCheck:
    """How record images are checked: the pixel limit and whether paths may leave the image root."""

    max_pixels: int | None = DEFAULT_MAX_PIXELS
    allow_outside_root: bool = False


@dataclass
class Sample:
    """A validated record: its id, encoding and resolved image paths."""

    id: str
    encoded: Encoded
    images: list[Path]


def too_long(n_tokens: int, n_image_tokens: int, max_length: int) -> str:
    """The problem of a sample over the context."""
    return (
        f"sample is {n_tokens} tokens (incl. {n_image_tokens} image tokens), over the context "
        f"--data.max_length={max_length}; shorten it or raise the limit (nothing is cut silently)"
    )


def check_record(
    rec: dict[str, Any],
    processor: TextEncoder,
    image_root: Path,
    max_length: int,
    image_placement: str = "as-is",
    image_check: ImageCheck | None = None,
    image_size: Callable[[Path], tuple[int, int]] | None = None,
) -> Sample:
    """Validate one record and encode it with ``processor``; raise ``ValueError``/`DataError` describing the first
    problem. ``image_size`` gives an image's (width, height) and raises `DataError` for a bad one (default: decode
    the image in full, `load_image`)."""
    check = image_check or ImageCheck()
    token = processor.image_token
    rec = place_image_tokens(rec, image_placement, token=token)
    messages = record_messages(rec)
    images = [resolve_image_path(image_root, p, check.allow_outside_root) for p in record_images(rec)]
    n_placeholders = sum(m.content.count(token) for m in messages if m.role == "user")
    if n_placeholders != len(images):
        raise ValueError(f"{n_placeholders} {token} placeholder(s) but {len(images)} image(s)")
    sizes = [image_size(p) if image_size else load_image(p, check.max_pixels).size for p in images]
    enc = processor.encode(messages, sizes)  # AnyRes: each image's token count follows its tile grid
    if len(enc) > max_length:
        raise ValueError(too_long(len(enc), sum(processor.image_tokens(s) for s in sizes), max_length))
    if not any(label != -100 for label in enc.labels):
        raise ValueError("sample has no trainable (assistant) tokens")
    return Sample(str(rec.get("id", "")), enc, images)


def validate_file(
    path: str | os.PathLike[str],
    processor: TextEncoder,
    image_root: str | os.PathLike[str] | None = None,
    max_length: int = 2048,
    image_placement: str = "as-is",
    image_check: ImageCheck | None = None,
) -> tuple[list[Sample], ValidationReport]:
    """Check every record of ``path``; return the good samples and a report listing every bad one."""
    path = Path(path)
    root = Path(image_root) if image_root else path.parent
    located, problems = scan_file(path)
    report = ValidationReport(str(path), total=len(located) + len(problems), problems=problems)
    samples: list[Sample] = []
    for loc, rec in located:
        rid = str(rec.get("id", "?"))
        try:
            samples.append(check_record(rec, processor, root, max_length, image_placement, image_check))
        except (ValueError, DataError) as e:
            report.problems.append(Problem(loc, rid, str(e)))
    report.problems.sort(key=lambda p: _line_of(p.location))  # unreadable lines and bad records, in file order
    return samples, report


def _line_of(location: str) -> int:
    """The line (JSONL) or record number (JSON list) of a location string, for ordering problems."""
    tail = location.rsplit(":", 1)[-1].strip().removeprefix("record #")
    return int(tail) if tail.isdigit() else 0


class SupervisedDataset(torch.utils.data.Dataset):
    """Validated samples (a list, or `scitune.data.validated.RecordSamples`, which reads each record on access);
    images are loaded and preprocessed on access.

    An image or a record that cannot be read any more (changed or removed after validation) does not stop the run
    here: the item comes back as ``{"bad": {id, file, problem}}`` and the training loop skips it and counts it.
    """

    def __init__(
        self,
        samples: list[Sample],
        images: Callable[[list[Image.Image]], dict[str, torch.Tensor]],
        feature_store: Any = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ):
        self.samples = samples
        self.images = images  # the processor's: PIL images -> pixel_values (+ image_grids)
        self.feature_store = feature_store  # a FeatureStore: cached encoder outputs replace the images
        self.max_pixels = max_pixels
        self._keys: dict[Path, str] = {}

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def lengths(self) -> list[int]:
        return [len(s.encoded) for s in self.samples]

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            s = self.samples[i]  # lazy samples (`scitune.data.validated.RecordSamples`) read and encode it here
        except DataError as e:
            return {"bad": {"id": getattr(e, "record_id", "?"), "index": i, "problem": str(e)}}
        item: dict[str, Any] = {
            "input_ids": torch.tensor(s.encoded.input_ids),
            "labels": torch.tensor(s.encoded.labels),
            "pixel_values": None,
        }
        if s.images and self.feature_store is not None:
            from scitune.data.feature_store import image_key

            keys = [self._keys.setdefault(p, image_key(p)) for p in s.images]
            item.update(self.feature_store.features(keys))  # AnyRes: every image's tiles, and the grids
        elif s.images:
            try:
                imgs = [load_image(p, self.max_pixels) for p in s.images]
            except DataError as e:
                return {"bad": {"id": s.id, "index": i, "problem": str(e)}}
            item.update(self.images(imgs))  # AnyRes: every image's overview + tiles in order, and the grids
        return item
