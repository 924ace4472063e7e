"""Opening image files, in one place: only regular files, a pixel limit read from the header before anything is
decoded, truncated or corrupt files reported by name, and paths kept inside their image root."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from PIL import Image

from scitune.io import DataError, check_input_file

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest image (width x height) opened by default: 50 megapixels (a 100-megapixel PNG decodes to 1.2 GB)."""


def resolve_image_path(root: str | os.PathLike[str], rel: str, allow_outside: bool = False) -> Path:
    """``root / rel``, refused (`DataError`) when it leaves ``root``: an absolute path, ``..``, or a symlink.

    Args:
        root: the image root.
        rel: the record's image path.
        allow_outside: accept paths outside the root (``--data.allow_outside_root``).
    """
    root = Path(root)
    path = root / rel
    if allow_outside:
        return path
    if Path(rel).is_absolute():
        raise DataError(
            f"image path {rel!r} is absolute; image paths are relative to the image root {root} "
            "(pass --data.allow_outside_root true to read it anyway)"
        )
    real, real_root = path.resolve(), root.resolve()
    if real != real_root and real_root not in real.parents:
        raise DataError(
            f"image path {rel!r} leads outside the image root {root} (through '..' or a symlink); "
            "pass --data.allow_outside_root true to read it anyway"
        )
    return path


def image_size(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """``(width, height)`` from the file's header (nothing decoded); the same checks as `open_image`."""
    path = check_input_file(path, "image")
    try:
        with Image.open(path) as im:
            size = im.size
    except Image.DecompressionBombError as e:  # PIL's own guard, at twice its warning size: past ours too
        raise DataError(f"{path}: image is over the limit of {(max_pixels or 0) / 1e6:g} megapixels ({e})") from None
    except Exception as e:  # PIL raises many types for files it cannot identify
        raise DataError(f"{path}: cannot read image: {type(e).__name__}: {e}") from None
    _check_pixels(path, size, max_pixels)
    return size


_END_MARKERS = {"PNG": b"IEND\xaeB`\x82", "JPEG": b"\xff\xd9"}
"""What a complete file of each format holds near its end: PNG's IEND chunk (with its CRC), JPEG's end-of-image."""
_TAIL = 4096


def check_image(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """``(width, height)`` from the file's header, after a cheap check that the file is complete.

    A PNG must hold its IEND chunk and a JPEG its end-of-image marker in the last 4 KiB; a file of another format, or
    one without its end marker, is decoded in full (`open_image`), so a truncated file raises the same `DataError`.
    Damage inside a file of full length shows only when it is decoded (training skips such a record and counts it).
    """
    path = check_input_file(path, "image")
    found = _png_or_jpeg(path)
    if found is not None:  # the common formats, read here (PIL's JPEG header parsing costs ~0.1 ms a file)
        size, complete = found
        _check_pixels(path, size, max_pixels)
        return size if complete else open_image(path, max_pixels).size
    try:
        with Image.open(path) as im:
            size, marker = im.size, _END_MARKERS.get(im.format or "")
            complete = marker is not None and im.fp is not None and marker in _tail(im.fp)
    except Image.DecompressionBombError as e:  # PIL's own guard, at twice its warning size: past ours too
        raise DataError(f"{path}: image is over the limit of {(max_pixels or 0) / 1e6:g} megapixels ({e})") from None
    except Exception as e:  # PIL raises many types for files it cannot identify
        raise DataError(f"{path}: cannot read image: {type(e).__name__}: {e}") from None
    _check_pixels(path, size, max_pixels)
    return size if complete else open_image(path, max_pixels).size


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
"""JPEG start-of-frame markers (they hold the height and width)."""


def _png_or_jpeg(path: Path) -> tuple[tuple[int, int], bool] | None:
    """``((width, height), complete)`` of a PNG (its IHDR chunk) or a baseline/progressive JPEG (its start-of-frame
    segment), as PIL reads them, and whether the file ends as a complete one does; None for anything else or
    anything unusual (PIL then decides). Sizes past PIL's decompression-bomb guard are left to PIL too."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                size = struct.unpack(">II", head[16:24])
                kind = "PNG"
            elif head[:3] == b"\xff\xd8\xff":
                size = _jpeg_size(f)
                kind = "JPEG"
            else:
                return None
            if size is None or not size[0] or not size[1]:
                return None
            if Image.MAX_IMAGE_PIXELS and size[0] * size[1] > 2 * Image.MAX_IMAGE_PIXELS:
                return None
            return (size[0], size[1]), _END_MARKERS[kind] in _tail(f)
    except (OSError, struct.error):
        return None


def _jpeg_size(f: Any) -> tuple[int, int] | None:
    f.seek(2)
    for _ in range(256):  # segments before the frame header: APPn, DQT, DHT, COM, ...
        head = f.read(4)
        if len(head) < 4 or head[0] != 0xFF:
            return None
        marker, length = head[1], struct.unpack(">H", head[2:4])[0]
        if marker in _SOF:
            frame = f.read(5)  # precision, height, width
            return (struct.unpack(">H", frame[3:5])[0], struct.unpack(">H", frame[1:3])[0]) if len(frame) == 5 else None
        if marker in (0xD8, 0xD9, 0xDA) or 0xD0 <= marker <= 0xD7 or marker == 0xFF or length < 2:
            return None  # scan data, restarts or fill bytes before a frame: let PIL read it
        f.seek(length - 2, os.SEEK_CUR)
    return None


def _tail(fp: Any) -> bytes:
    fp.seek(0, os.SEEK_END)
    fp.seek(max(0, fp.tell() - _TAIL))
    return fp.read()


class ImageRoot:
    """`resolve_image_path` for many paths under one root: the root and each folder are resolved once, and only a
    path's last part is looked at per file (a symlink there is resolved in full). Same results, same errors."""

    def __init__(self, root: str | os.PathLike[str], allow_outside: bool = False):
        self.root = Path(root)
        self.allow_outside = allow_outside
        self._real_root = os.path.realpath(self.root)
        self._folders: dict[str, str] = {}

    def resolve(self, rel: str) -> Path:
        """``root / rel``; `DataError` when it leaves the root (unless ``allow_outside``)."""
        if self.allow_outside:
            return self.root / rel
        folder, name = os.path.split(rel)
        if os.path.isabs(rel) or name in ("", ".", ".."):
            return resolve_image_path(self.root, rel)  # the rare shapes take the general path (and its errors)
        real_folder = self._folders.get(folder)
        if real_folder is None:
            real_folder = self._folders[folder] = os.path.realpath(self.root / folder) if folder else self._real_root
        real = os.path.join(real_folder, name)
        if os.path.islink(real):
            real = os.path.realpath(real)
        top = self._real_root.rstrip(os.sep) + os.sep
        if real != self._real_root and not real.startswith(top):
            return resolve_image_path(self.root, rel)  # raises, naming the path
        return self.root / rel


def _check_pixels(path: Path, size: tuple[int, int], max_pixels: int | None) -> None:
    w, h = size
    if max_pixels and w * h > max_pixels:
        raise DataError(
            f"{path}: image is {w}x{h} ({w * h / 1e6:.0f} megapixels), over the limit of {max_pixels / 1e6:g} "
            "megapixels (raise it with the max_image_pixels option)"
        )


def open_image(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image as RGB.

    Raises `DataError` naming the file when it is missing, not a regular file (a FIFO is never opened), larger than
    ``max_pixels`` (checked from the header, before decoding), or truncated or corrupt.
    """
    path = check_input_file(path, "image")
    try:
        with Image.open(path) as im:
            _check_pixels(path, im.size, max_pixels)
            return im.convert("RGB")
    except DataError:
        raise
    except Image.DecompressionBombError as e:  # PIL's own guard, at twice its warning size: past ours too
        raise DataError(f"{path}: image is over the limit of {(max_pixels or 0) / 1e6:g} megapixels ({e})") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files
        raise DataError(f"{path}: cannot read image: {type(e).__name__}: {e}") from None
