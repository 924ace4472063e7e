"""Images of a request: base64 ``data:`` URLs or files under the image root, size-checked before decoding.

Nothing is fetched from the network, and nothing is read outside the image root (symlinks are resolved first).
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image, UnidentifiedImageError

from scitune.serve.schema import ApiError

FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")
"""Image formats the server decodes (others are refused before any decoder runs)."""


@dataclass(frozen=True)
class ImageLimits:
    """What an image may be: encoded bytes, pixels, and the folder local paths must resolve into."""

    max_bytes: int
    max_pixels: int
    root: Path | None = None

    @classmethod
    def make(cls, max_bytes: int, max_pixels: int, root: str | os.PathLike[str] | None) -> ImageLimits:
        """Limits with ``root`` resolved once (a missing root folder is an error at startup)."""
        if root is None:
            return cls(max_bytes, max_pixels, None)
        resolved = Path(root).resolve()
        if not resolved.is_dir():
            raise FileNotFoundError(f"--image_root {root}: not a folder")
        return cls(max_bytes, max_pixels, resolved)


def read_image(url: str, limits: ImageLimits, param: str | None = None) -> Image.Image:
    """Load the image an ``image_url`` names as RGB; raise `ApiError` (4xx) for anything refused.

    Args:
        url: a ``data:image/...;base64,`` URL, a ``file://`` URL or a path (relative paths are under the root).
        limits: the size limits and the image root.
        param: the request field named in errors, e.g. ``messages.0.content.1.image_url``.
    """
    return load_rgb(open_image(url, limits, param), param)


def open_image(url: str, limits: ImageLimits, param: str | None = None) -> Image.Image:
    """The image an ``image_url`` names, checked from its header but not decoded yet (`load_rgb` decodes it).

    Its ``size`` is known, so a request's images can be checked together before any of them is decoded.
    Arguments as in `read_image`.
    """
    scheme = urlparse(url).scheme.lower() if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", url) else ""
    if scheme == "data":
        data = _data_url_bytes(url, limits, param)
    elif scheme in ("http", "https", "ftp"):
        raise ApiError(
            400,
            f"{scheme} image URLs are not supported: this server fetches nothing from the network; "
            "send the image inline as a base64 data: URL (data:image/png;base64,...)",
            "image_url_not_supported",
            param,
        )
    elif scheme == "file":
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise ApiError(400, "file:// URLs must name a local file (file:///path)", "invalid_image_url", param)
        data = _local_bytes(unquote(parsed.path), limits, param)
    elif scheme == "":
        data = _local_bytes(url, limits, param)
    else:
        raise ApiError(400, f"unsupported image URL scheme {scheme!r}: use a data: URL", "invalid_image_url", param)
    return _open_checked(data, limits, param)


def _data_url_bytes(url: str, limits: ImageLimits, param: str | None) -> bytes:
    header, sep, payload = url[5:].partition(",")
    params = [p.strip().lower() for p in header.split(";")]
    if not sep or "base64" not in params[1:]:
        raise ApiError(400, "data: URLs must be base64 encoded (data:image/png;base64,...)", "invalid_image", param)
    if params[0] and not params[0].startswith("image/"):
        raise ApiError(400, f"data: URL has media type {params[0]!r}, not an image", "invalid_image", param)
    payload = re.sub(r"\s+", "", payload)
    if len(payload) * 3 // 4 > limits.max_bytes:  # decoded size, known before decoding
        raise ApiError(413, f"image is larger than the limit of {limits.max_bytes} bytes", "image_too_large", param)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "image data is not valid base64", "invalid_image", param) from None


def _local_bytes(path: str, limits: ImageLimits, param: str | None) -> bytes:
    if limits.root is None:
        raise ApiError(
            400,
            "local image paths are disabled on this server (start it with --image_root DIR); "
            "send the image as a base64 data: URL instead",
            "local_path_not_allowed",
            param,
        )
    if not path or "\x00" in path:
        raise ApiError(400, "invalid image path", "invalid_image_url", param)
    # realpath follows every symlink, so a link inside the root that points out of it is caught here
    real = Path(os.path.realpath(limits.root / path))
    if not real.is_relative_to(limits.root):
        raise ApiError(403, f"image path {path!r} is outside the image root", "path_outside_image_root", param)
    try:
        # O_NOFOLLOW: the checked path must still not be a link; O_NONBLOCK: a FIFO must not hang the server
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ApiError(400, f"image file {path!r} not found under the image root", "image_not_found", param) from None
    except OSError:
        raise ApiError(403, f"image file {path!r} cannot be read", "image_not_readable", param) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ApiError(400, f"image path {path!r} is not a regular file", "invalid_image_url", param)
        if st.st_size > limits.max_bytes:
            raise ApiError(413, f"image is larger than the limit of {limits.max_bytes} bytes", "image_too_large", param)
        return f.read(limits.max_bytes + 1)


def decode_image(data: bytes, limits: ImageLimits, param: str | None = None) -> Image.Image:
    """Decode image bytes to RGB, checking the pixel count from the header before decoding."""
    return load_rgb(_open_checked(data, limits, param), param)


def _open_checked(data: bytes, limits: ImageLimits, param: str | None) -> Image.Image:
    if len(data) > limits.max_bytes:
        raise ApiError(413, f"image is larger than the limit of {limits.max_bytes} bytes", "image_too_large", param)
    try:
        im = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
    except Image.DecompressionBombError:
        raise ApiError(400, "image has too many pixels", "image_too_large", param) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ApiError(
            400, f"could not read the image (supported formats: {', '.join(FORMATS)})", "invalid_image", param
        ) from None
    w, h = im.size
    if w * h > limits.max_pixels:
        raise ApiError(
            400, f"image is {w}x{h} pixels; the limit is {limits.max_pixels} pixels", "image_too_large", param
        )
    return im


def load_rgb(im: Image.Image, param: str | None = None) -> Image.Image:
    """Decode an image from `open_image` to RGB (one copy of the pixels: an RGB image is not copied again)."""
    try:
        im.load()
        return im if im.mode == "RGB" else im.convert("RGB")
    except Exception:  # truncated or corrupt data: the decoders raise OSError, ValueError, SyntaxError, ...
        raise ApiError(400, "the image is corrupt or truncated", "invalid_image", param) from None
