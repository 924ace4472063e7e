"""Fingerprints of what a run or a checkpoint depends on: the base models' weight files and the training data.

A file's SHA-256 is computed once and cached by (path, size, mtime) in ``$SCITUNE_CACHE_DIR/hashes.json``
(default ``~/.cache/scitune``), so checking a 13 GB base model again costs a ``stat`` per file.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from scitune.io import check_input_file, write_json
from scitune.outputs import sha256_file

log = logging.getLogger(__name__)

CACHE_ENV = "SCITUNE_CACHE_DIR"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5", ".gguf", ".model")
"""Files whose content defines a base model (weights; ``.model`` = SentencePiece); configs are small and ride along."""
_LOCK = threading.Lock()


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "scitune"
    )
    return Path(root)


class HashCache:
    """SHA-256 of files keyed by real path and valid while size and mtime stay the same."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_dir() / "hashes.json"
        self._data: dict[str, dict[str, Any]] | None = None

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._data is None:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                self._data = data if isinstance(data, dict) else {}
            except (OSError, ValueError):  # no cache yet, or an unreadable one: start a new one
                self._data = {}
        return self._data

    def cached(self, path: Path) -> str | None:
        """The cached hash if the file's size and mtime are unchanged, else None (nothing is computed)."""
        st = path.stat()
        hit = self._load().get(str(path.resolve()))
        if hit and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
            return hit.get("sha256")
        return None

    def sha256(self, path: Path) -> str:
        """The file's SHA-256, from the cache or computed (and then cached)."""
        hit = self.cached(path)
        if hit:
            return hit
        st = path.stat()
        digest = sha256_file(path)
        with _LOCK:
            self._load()[str(path.resolve())] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
            try:
                write_json(self.path, self._data, indent=None)
            except OSError as e:  # a read-only home: hashes are recomputed next time
                log.debug("cannot write the hash cache %s: %s", self.path, e)
        return digest


def _model_files(folder: Path) -> list[Path]:
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in WEIGHT_SUFFIXES]
    return files + [p for p in (folder / "config.json",) if p.is_file()]


def local_model_folder(source: str) -> Path | None:
    """The local folder holding ``source`` (a folder, or a hub id already in the local HF cache), or None."""
    p = Path(source).expanduser()
    if p.is_dir():
        return p
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, local_files_only=True))
    except Exception:  # not a hub id, or not downloaded: nothing local to fingerprint
        return None


def fingerprint_model(source: str | None, cache: HashCache | None = None) -> dict[str, Any] | None:
    """``{source, files: {name: {size, sha256}}}`` of a base model's weight files, or None without a source.

    A hub id that is not in the local cache gets ``files: None`` (it cannot be checked here).
    """
    if not source:
        return None
    folder = local_model_folder(source)
    if folder is None:
        return {"source": source, "files": None}
    cache = cache or HashCache()
    files = {}
    for p in _model_files(folder):
        files[p.relative_to(folder).as_posix()] = {"size": p.stat().st_size, "sha256": cache.sha256(p)}
    return {"source": source, "files": files}


def check_model_fingerprint(role: str, want: dict[str, Any], full: bool, cache: HashCache | None = None) -> list[str]:
    """What differs between the base model at ``want['source']`` and its recorded fingerprint ([] = the same).

    Sizes are always compared; hashes where the cache has them for the file's current size and mtime, and all of
    them with ``full``.
    """
    if not want or want.get("files") is None:
        return []
    folder = local_model_folder(want["source"])
    if folder is None:
        return [f"{role} base model {want['source']}: not found"]
    cache = cache or HashCache()
    problems = []
    for rel, rec in want["files"].items():
        path = folder / rel
        if not path.is_file():
            problems.append(f"{role} base model {want['source']}: {rel} is missing")
            continue
        if path.stat().st_size != rec["size"]:
            problems.append(f"{role} base model {want['source']}: {rel} has another size")
            continue
        digest = cache.sha256(path) if full else cache.cached(path)
        if digest is not None and digest != rec["sha256"]:
            problems.append(f"{role} base model {want['source']}: {rel} has other content (SHA-256 differs)")
    return problems


def fingerprint_data_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{path, size, sha256}`` of a training data file (hashed every time: data files change in place)."""
    p = check_input_file(path, "data file")
    return {"path": str(p), "size": p.stat().st_size, "sha256": sha256_file(p)}
