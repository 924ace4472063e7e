"""The cached verdicts of `scitune.data.validated.validate_records`, in ``$SCITUNE_CACHE_DIR/validation/``: one
``.npz`` per verdict (the usable records' spans and lengths as arrays, the report as JSON), named by a hash of what
decides it: the data file's content, the processor, the context, the image settings and this format. A damaged or
foreign entry is ignored (and replaced), never trusted."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from scitune.data.conversation import Message
from scitune.data.dataset import ImageCheck, Problem, ValidationReport
from scitune.fingerprint import HashCache, cache_dir
from scitune.io import atomic_path

log = logging.getLogger(__name__)

FORMAT = 1
"""Bump when what the validation decides, or how it is stored, changes."""
KEEP = 64
"""Entries kept; older ones are removed when a new one is stored."""
_ARRAYS = {"starts": np.int64, "ends": np.int64, "numbers": np.int64, "lengths": np.int32, "exact": np.bool_}


def _sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode("utf-8") if isinstance(text, str) else text).hexdigest()


def processor_identity(processor: Any) -> dict[str, Any]:
    """What of a processor decides a record's verdict: the whole tokenizer (its `tokenizers` JSON, or vocabulary and
    settings), its special tokens and chat template, the processor's settings (template, image token, image-token
    rule, scitune version) and the text its template makes of a probe conversation."""
    tok = processor.tokenizer
    backend = getattr(tok, "backend_tokenizer", None)
    spec = backend.to_str() if backend is not None else json.dumps(sorted(tok.get_vocab().items()))
    probe = [Message("system", "s"), Message("user", f"{processor.image_token}\nq"), Message("assistant", "a")]
    try:
        text = json.dumps([(s.text, s.trainable) for s in processor.template.render(probe, tok)])
    except ValueError as e:  # a template that cannot render (the record checks will say so)
        text = str(e)
    config = processor.config() if hasattr(processor, "config") else {"image_token": processor.image_token}
    return {
        "tokenizer": _sha(spec),
        "tokenizer_class": type(tok).__name__,
        "specials": [tok.bos_token_id, tok.eos_token, getattr(tok, "chat_template", None) and _sha(tok.chat_template)],
        "processor": config,
        "template_text": _sha(text),
    }


def cache_key(
    path: Path, processor: Any, image_root: Path, max_length: int, placement: str, check: ImageCheck
) -> dict[str, Any]:
    """Everything a verdict depends on. The data file is known by its SHA-256, computed once and then cached by
    path, size and mtime (`scitune.fingerprint.HashCache`), so a second launch only ``stat``s it. Images are not
    part of the key: one that changes later is caught when training reads its record."""
    return {
        "format": FORMAT,
        "data": {"path": str(path), "size": path.stat().st_size, "sha256": HashCache().sha256(path)},
        "processor": processor_identity(processor),
        "max_length": max_length,
        "image_placement": placement,
        "image_root": [str(image_root), os.path.realpath(image_root)],
        "max_pixels": check.max_pixels,
        "allow_outside_root": check.allow_outside_root,
    }


def entry_path(key: dict[str, Any]) -> Path:
    return cache_dir() / "validation" / f"{_sha(json.dumps(key, sort_keys=True))[:40]}.npz"


def load(key: dict[str, Any]) -> dict[str, Any] | None:
    """The stored verdict for ``key`` as `Validated` fields, or None (none stored, or not a sound entry)."""
    path = entry_path(key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode("utf-8"))
            arrays = {name: z[name] for name in _ARRAYS}
        if meta.get("key") != json.loads(json.dumps(key)):
            return None
        n = len(arrays["starts"])
        size = key["data"]["size"]
        sound = (
            all(a.dtype == dtype and a.shape == (n,) for (name, dtype), a in zip(_ARRAYS.items(), arrays.values()))
            and n + len(meta["problems"]) <= meta["total"]
            and (n == 0 or (arrays["starts"].min() >= 0 and arrays["ends"].max() <= size))
            and bool(np.all(arrays["starts"] < arrays["ends"]))
            and (n == 0 or int(arrays["lengths"].max()) <= key["max_length"])
        )
        if not sound:
            raise ValueError("inconsistent arrays")
        problems = [Problem(str(loc), str(rid), str(msg)) for loc, rid, msg in meta["problems"]]
        report = ValidationReport(str(meta["report_path"]), total=int(meta["total"]), problems=problems)
    except Exception as e:  # a damaged entry (torn, truncated, edited): validate again and replace it
        log.warning("ignoring a damaged validation cache entry %s (%s: %s)", path, type(e).__name__, e)
        return None
    os.utime(path)  # recently used: kept longest
    return {"report": report, **arrays}


def store(key: dict[str, Any], validated: Any) -> None:
    """Write the verdict atomically (a failure to write only costs the next launch a validation)."""
    path = entry_path(key)
    report = validated.report
    meta = {
        "key": key,
        "report_path": report.path,
        "total": report.total,
        "problems": [[p.location, p.record_id, p.message] for p in report.problems],
    }
    arrays = {name: np.ascontiguousarray(getattr(validated, name), dtype=dtype) for name, dtype in _ARRAYS.items()}
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8), **arrays)
        _prune(path.parent)
    except OSError as e:
        log.warning("cannot store the validation verdict in %s: %s", path, e)


def _prune(folder: Path) -> None:
    entries = []
    for p in folder.glob("*.npz"):
        try:
            entries.append((p.stat().st_mtime_ns, p))
        except FileNotFoundError:  # another process pruned it
            continue
    for _, old in sorted(entries, reverse=True)[KEEP:]:
        old.unlink(missing_ok=True)
