"""Statistics of a data file: records, images, turns, missing fields, and a histogram of sample lengths (PNG)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from scitune.config.schema import DEFAULT_IMAGE_TOKEN
from scitune.data.conversation import record_images, record_messages
from scitune.data.dataset import scan_file
from scitune.data.tokenize import TextEncoder
from scitune.images import image_size, resolve_image_path
from scitune.io import DataError, atomic_path, write_json

LengthFn = Callable[[dict[str, Any]], int]
HISTOGRAM_FILE = "length_histogram.png"
STATS_FILE = "stats.json"


def word_length(record: dict[str, Any]) -> int:
    """Whitespace-separated words in every turn (and the record's system message)."""
    return sum(len(m.content.split()) for m in record_messages(record))


def tokenizer_length(tokenizer_path: str | os.PathLike[str]) -> LengthFn:
    """Tokens of every turn's text with a Hugging Face tokenizer (no template, ``<image>`` left out)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_path))

    def length(record: dict[str, Any]) -> int:
        texts = [m.content.replace(DEFAULT_IMAGE_TOKEN, "") for m in record_messages(record)]
        return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)

    return length


def processor_length(processor: TextEncoder, image_root: Path) -> LengthFn:
    """The exact training length under a processor (a checkpoint's), template and image tokens included: the
    number training and `scitune data validate` compare with the context. With AnyRes an image's tokens follow its
    size, read from the file's header."""

    def length(record: dict[str, Any]) -> int:
        sizes = [image_size(resolve_image_path(image_root, p)) for p in record_images(record)]
        return len(processor.encode(record_messages(record), sizes))

    return length


def _inside(root: Path, image: str) -> bool:
    """Whether ``image`` stays inside the image root (a path that leaves it counts as missing)."""
    try:
        resolve_image_path(root, image)
    except DataError:
        return False
    return True


def _summary(values: list[int]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    a = np.asarray(values)
    return {"count": len(values), "min": int(a.min()), "mean": round(float(a.mean()), 2),
            "median": float(np.median(a)), "p95": float(np.percentile(a, 95)), "max": int(a.max())}  # fmt: skip


def _missing(record: dict[str, Any]) -> list[str]:
    """Names of the required parts this record lacks (id, conversations, a gpt turn, non-empty turn values)."""
    out = [] if record.get("id") not in (None, "") else ["id"]
    conv = record.get("conversations")
    if not isinstance(conv, list) or not conv:
        return [*out, "conversations"]
    if not any(isinstance(t, dict) and str(t.get("from", "")).lower() in ("gpt", "assistant") for t in conv):
        out.append("gpt_turn")
    if any(not isinstance(t, dict) or not str(t.get("value") or "").strip() for t in conv):
        out.append("turn_value")
    return out


def compute_stats(
    path: str | os.PathLike[str], length: LengthFn | None = None, image_root: str | os.PathLike[str] | None = None
) -> tuple[dict[str, Any], list[int]]:
    """Count what a data file holds.

    Args:
        path: JSONL or JSON-list file of records.
        length: Sample length function (`word_length` by default; `tokenizer_length`, `checkpoint_length`).
        image_root: Folder of relative image paths (default: the file's folder), to count missing image files.

    Returns:
        ``(stats, lengths)``: the stats dict (records, malformed lines, records with images and text-only,
        images and missing image files, turns, records missing each required part, sources from ``meta.source``,
        length summary) and the per-record lengths (records whose structure is invalid have none).
    """
    path = Path(path)
    root = Path(image_root) if image_root else path.parent
    located, malformed = scan_file(path)
    for problem in malformed:  # text that is not UTF-8 cannot be counted: name the line
        if problem.message.startswith("not UTF-8"):
            raise DataError(f"{problem.location}: {problem.message}")
    length = length or word_length
    missing, turns, sources = Counter(), Counter(), Counter()
    lengths: list[int] = []
    with_image = n_images = missing_files = invalid = 0
    for _, rec in located:
        missing.update(_missing(rec))
        conv = rec.get("conversations")
        turns[len(conv) if isinstance(conv, list) else 0] += 1
        meta = rec.get("meta")
        sources[str(meta.get("source")) if isinstance(meta, dict) else "none"] += 1
        bad = False
        try:
            images = record_images(rec)
        except ValueError:  # 'image' of a wrong type
            images, bad = [], True
        try:
            lengths.append(length(rec))
        except ValueError:  # bad structure (see missing_fields): no length
            bad = True
        invalid += bad
        with_image += bool(images)
        n_images += len(images)
        missing_files += sum(not _inside(root, p) or not (root / p).is_file() for p in images)
    n_turns = [k for k, v in turns.items() for _ in range(v)]
    stats = {"path": str(path), "records": len(located), "malformed_lines": len(malformed), "invalid": invalid,
             "with_image": with_image, "text_only": len(located) - with_image, "images": n_images,
             "image_files_missing": missing_files, "turns": {"total": sum(n_turns), **_summary(n_turns),
             "per_record": {str(k): v for k, v in sorted(turns.items())}},
             "missing_fields": {k: missing.get(k, 0) for k in ("id", "conversations", "gpt_turn", "turn_value")},
             "sources": dict(sources.most_common()), "length": _summary(lengths)}  # fmt: skip
    return stats, lengths


def plot_length_histogram(
    lengths: list[int], path: str | os.PathLike[str], unit: str = "words", title: str = ""
) -> Path:
    """Write a histogram of sample lengths as a PNG (matplotlib Agg, no display), atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if lengths:
        ax.hist(lengths, bins=min(50, max(1, len(set(lengths)))), color="#1f77b4")
        ax.axvline(float(np.median(lengths)), color="#d62728", ls="--", lw=1, label=f"median {np.median(lengths):g}")
        ax.legend(frameon=False)
    ax.set_xlabel(f"sample length ({unit})")
    ax.set_ylabel("records")
    ax.set_title(title or f"{len(lengths)} records")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def write_stats(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    tokenizer: str | None = None,
    processor: TextEncoder | None = None,
    image_root: str | None = None,
) -> dict[str, Any]:
    """`compute_stats` with the chosen length unit; write ``stats.json`` and ``length_histogram.png`` to ``out_dir``.

    Args:
        path: Data file.
        out_dir: Output folder.
        tokenizer: Hugging Face tokenizer folder: lengths in its tokens (turn texts only).
        processor: a checkpoint's processor: exact training lengths (template and image tokens included).
        image_root: Folder of relative image paths (default: the data file's folder).

    Returns:
        The stats, with ``length.unit`` and the paths written.
    """
    if processor is not None:
        root = Path(image_root) if image_root else Path(path).parent
        length, unit = processor_length(processor, root), "tokens, template and image tokens included"
    elif tokenizer:
        length, unit = tokenizer_length(tokenizer), "tokens"
    else:
        length, unit = word_length, "words"
    stats, lengths = compute_stats(path, length, image_root)
    stats["length"]["unit"] = unit
    out = Path(out_dir)
    plot_length_histogram(lengths, out / HISTOGRAM_FILE, unit, f"{Path(path).name}: {len(lengths)} records")
    stats["files"] = {"stats": str(out / STATS_FILE), "histogram": str(out / HISTOGRAM_FILE)}
    write_json(out / STATS_FILE, stats)
    return stats
