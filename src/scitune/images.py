"""Opening image files, in one place: only regular files, a pixel limit read from the header before anything is
decoded, truncated or corrupt files reported by name, and paths kept inside their image root."""

from __future__ import annotations

import os
from pathlib import Path

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
