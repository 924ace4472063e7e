"""OCR of figure images with Tesseract (through pytesseract), and the character error rate against known text."""

from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from scitune.images import resolve_image_path
from scitune.io import DataError

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "install the Tesseract binary (Debian/Ubuntu: `apt-get install -y tesseract-ocr`, macOS: `brew install "
    "tesseract`) and its Python wrapper (`pip install pytesseract`)"
)


class OCRUnavailableError(RuntimeError):
    """Tesseract or pytesseract is missing; the message says how to install them."""


@dataclass
class OCRConfig:
    """How images are read."""

    lang: str = "eng"
    """Tesseract language(s), e.g. ``eng`` or ``eng+deu``."""
    psm: int = 11
    """Tesseract page segmentation mode; 11 (sparse text) suits scattered figure labels."""
    scale: float = 2.0
    """Upscale factor before OCR: figure text is small and Tesseract reads glyphs of ~20+ pixels best."""
    workers: int = 2
    """Images read at once (each runs its own Tesseract process)."""


def tesseract_missing() -> str | None:
    """Why OCR cannot run here (a sentence with the install hint), or None when it can."""
    try:
        import pytesseract
    except ImportError:
        return f"pytesseract is not installed: {INSTALL_HINT}"
    cmd = pytesseract.pytesseract.tesseract_cmd
    if shutil.which(cmd) is None and not Path(cmd).is_file():
        return f"the Tesseract binary {cmd!r} is not on PATH: {INSTALL_HINT}"
    return None


def require_tesseract() -> Any:
    """The pytesseract module, or `OCRUnavailableError` telling how to install what is missing."""
    reason = tesseract_missing()
    if reason:
        raise OCRUnavailableError(f"OCR needs Tesseract: {reason}")
    import pytesseract

    return pytesseract


def normalize_text(text: str) -> str:
    """Collapse every run of whitespace (newlines included) into one space and strip the ends."""
    return " ".join(text.split())


def ocr_image(image: Image.Image | str | os.PathLike[str], config: OCRConfig | None = None) -> str:
    """Read the text of one image (grayscale, upscaled by ``config.scale``); whitespace is normalised.

    Raises:
        OCRUnavailableError: Tesseract or pytesseract is missing.
    """
    pytesseract = require_tesseract()
    config = config or OCRConfig()
    if not isinstance(image, Image.Image):
        from scitune.images import open_image

        image = open_image(image)
    gray = image.convert("L")
    if config.scale != 1:
        size = (round(gray.width * config.scale), round(gray.height * config.scale))
        gray = gray.resize(size, Image.Resampling.LANCZOS)
    return normalize_text(pytesseract.image_to_string(gray, lang=config.lang, config=f"--psm {config.psm}"))


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings (insertions, deletions and substitutions cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        cur = [i]
        for j, cb in enumerate(b, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def cer(pred: str, ref: str) -> float:
    """Character error rate: ``edit_distance(pred, ref) / len(ref)`` (can exceed 1 when ``pred`` is longer).

    An empty reference gives 0.0 for an empty prediction and 1.0 otherwise. Compare normalised texts
    (`normalize_text`) when whitespace layout should not count.
    """
    if not ref:
        return 0.0 if not pred else 1.0
    return edit_distance(pred, ref) / len(ref)


def corpus_cer(preds: list[str], refs: list[str]) -> float:
    """Total edit distance over total reference length (each pair weighted by its length)."""
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")
    total = sum(len(r) for r in refs)
    errors = sum(edit_distance(p, r) for p, r in zip(preds, refs))
    return errors / total if total else float(errors > 0)


def _reference(value: Any) -> str:
    """A record's existing OCR field as text (a token list is joined by spaces), '' when absent."""
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    return normalize_text(value) if isinstance(value, str) else ""


def _image_path(where: str, record: dict[str, Any], image_root: Path) -> Path:
    image = record.get("image")
    if not isinstance(image, str) or not image:
        raise DataError(f"{where} (id {record.get('id')!r}): no image path to read")
    try:
        path = resolve_image_path(image_root, image)
    except DataError as e:
        raise DataError(f"{where} (id {record.get('id')!r}): {e}") from None
    if not path.is_file():
        raise DataError(f"{where} (id {record.get('id')!r}): image {path} not found")
    return path


def fill_ocr(
    located: list[tuple[str, dict[str, Any]]],
    image_root: str | os.PathLike[str],
    field: str = "ocr_text",
    config: OCRConfig | None = None,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """OCR each record's ``image`` and store the text in ``field``.

    A record that already holds text in ``field`` (a string or a token list) is scored against it before it is
    replaced: the report gives the character error rate of the OCR against that text (SciFig's exact truth).

    Args:
        located: ``(location, record)`` pairs; each record needs an ``image`` path.
        image_root: Folder the image paths are relative to.
        field: Record field to fill.
        config: Tesseract settings.
        progress: Show a progress bar.

    Returns:
        ``(records, report)``: new records, and ``records``, ``scored`` (records with a previous text),
        ``cer`` (corpus: total edits / total reference characters) and ``cer_mean`` (mean per record), or None.

    Raises:
        OCRUnavailableError: Tesseract or pytesseract is missing (checked before any work).
        DataError: A record has no image path or its image is missing (file and record named).
    """
    require_tesseract()
    config = config or OCRConfig()
    root = Path(image_root)
    paths = [_image_path(where, rec, root) for where, rec in located]
    with ThreadPoolExecutor(max(1, config.workers)) as pool:
        texts = list(tqdm(pool.map(lambda p: ocr_image(p, config), paths), total=len(paths), desc="OCR",
                          unit="img", disable=not progress))  # fmt: skip
    records, preds, refs = [], [], []
    for (_, rec), text in zip(located, texts):
        ref = _reference(rec.get(field))
        if ref:
            preds.append(text)
            refs.append(ref)
        records.append({**rec, field: text})
    report = {"records": len(records), "field": field, "scored": len(refs),
              "cer": round(corpus_cer(preds, refs), 4) if refs else None,
              "cer_mean": round(sum(map(cer, preds, refs)) / len(refs), 4) if refs else None}  # fmt: skip
    return records, report
