"""Folders scitune writes (checkpoints, exports, reports): a manifest of every file it wrote (size + SHA-256), a
refusal to write into a folder holding files it did not write, and replacement built beside the old output and
swapped in only when complete, so that nothing of the user's is ever removed."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scitune.io import DataError, apply_umask, fsync_dir, fsync_file, fsync_tree, make_temp_dir

log = logging.getLogger(__name__)

MANIFEST = "scitune-manifest.json"
COMPLETE = "COMPLETE"
QUICK_HASH_LIMIT = 256 * 1024 * 1024
"""`verify_output` level ``quick`` hashes every file up to this size (projector, adapters, LoRA, tokenizer, configs)
and checks only the size of larger ones (full LLM or encoder weights)."""
TEMP_PREFIX = ".scitune-tmp-"
OLD_PREFIX = ".scitune-old-"


class DamagedOutput(DataError):
    """A scitune folder whose files do not match its manifest (or that was never completed)."""


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_entries(folder: Path, skip: tuple[str, ...] = (MANIFEST, COMPLETE)) -> dict[str, dict[str, Any]]:
    """``{relative path: {size, sha256}}`` of every regular file under ``folder`` (POSIX separators, sorted)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(folder).as_posix()
        if rel in skip:
            continue
        out[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return out


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The folder's manifest, or None when it has none (not written by scitune, or by a version before manifests)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DamagedOutput(f"{path}: damaged manifest ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise DamagedOutput(f"{path}: damaged manifest (no file list)")
    return data


def write_manifest(folder: Path, kind: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Hash every file of ``folder`` into its manifest (fsynced); return the manifest."""
    from scitune import __version__

    manifest = {
        "format": 1,
        "kind": kind,
        "scitune_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra or {}),
        "files": file_entries(folder),
    }
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    apply_umask(path)
    fsync_file(path)
    return manifest


def verify_output(folder: str | os.PathLike[str], level: str = "quick", complete: bool = False) -> dict | None:
    """Check ``folder`` against its manifest; raise `DamagedOutput` naming every damaged or missing file.

    Args:
        folder: a folder scitune wrote.
        level: ``sizes`` (every file there with its size), ``quick`` (and the SHA-256 of files up to
            `QUICK_HASH_LIMIT`) or ``full`` (the SHA-256 of every file).
        complete: also require the ``COMPLETE`` marker (checkpoints: written last, after every file is durable).

    Returns:
        the manifest, or None for a folder written before manifests existed (nothing to check it against).
    """
    folder = Path(folder)
    if complete and not (folder / COMPLETE).is_file():
        raise DamagedOutput(f"{folder}: incomplete (no {COMPLETE} marker: the save was interrupted)")
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    problems = []
    for rel, want in manifest["files"].items():
        path = folder / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
            continue
        size = path.stat().st_size
        if size != want["size"]:
            problems.append(f"{rel}: {size} bytes, the manifest says {want['size']}")
        elif (level == "full" or (level == "quick" and size <= QUICK_HASH_LIMIT)) and sha256_file(path) != want[
            "sha256"
        ]:
            problems.append(f"{rel}: SHA-256 differs from the manifest (the file is damaged)")
    if problems:
        raise DamagedOutput(f"{folder}: damaged: " + "; ".join(problems))
    return manifest


@dataclass
class FolderState:
    """What an output folder holds now: scitune's entries (by its manifest) and everything else."""

    exists: bool
    kind: str | None
    ours: list[str]
    foreign: list[str]


def inspect_folder(out: Path) -> FolderState:
    """Sort the top-level entries of ``out`` into those scitune's manifest lists and the rest."""
    if not out.exists():
        return FolderState(False, None, [], [])
    if not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose another --out")
    entries = sorted(p.name for p in out.iterdir())
    manifest = None
    try:
        manifest = read_manifest(out)
    except DamagedOutput:
        pass
    if manifest is None:
        return FolderState(True, None, [], entries)
    listed = {rel.split("/", 1)[0] for rel in manifest["files"]} | {MANIFEST, COMPLETE}
    return FolderState(
        True, manifest.get("kind"), [e for e in entries if e in listed], [e for e in entries if e not in listed]
    )


def _refusal(out: Path, state: FolderState, kind: str) -> str:
    if state.foreign:
        shown = ", ".join(state.foreign[:3]) + (f" and {len(state.foreign) - 3} more" if len(state.foreign) > 3 else "")
        what = f"holds files scitune did not write ({shown})"
    else:
        what = f"holds a scitune {state.kind}, not a {kind}"
    return f"{out}: {what}; choose another --out, or pass --overwrite (only scitune's own files are replaced)"


def check_output_folder(out: str | os.PathLike[str], kind: str, overwrite: bool = False) -> FolderState:
    """Refuse (`DataError`) an existing non-empty ``out`` that is not a ``kind`` scitune wrote, unless ``overwrite``."""
    out = Path(out)
    state = inspect_folder(out)
    if (state.foreign or (state.kind and state.kind != kind)) and not overwrite:
        raise DataError(_refusal(out, state, kind))
    return state


def write_output_folder(
    out: str | os.PathLike[str],
    kind: str,
    writer: Callable[[Path], Any],
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
    complete_marker: bool = False,
) -> Path:
    """Build an output folder beside ``out`` with ``writer(tmp)``, then swap it in; return ``out``.

    ``out`` may be missing, empty, or an earlier ``kind`` output of scitune (replaced). A folder with files scitune
    did not write is refused unless ``overwrite``; then the new files are moved in beside the user's files, and only
    the files of scitune's earlier output are removed. A file of the user's with the name of a new file is never
    replaced: that is an error. Every file is fsynced, the manifest (and ``COMPLETE``, for checkpoints) comes last.

    Args:
        out: the folder to write.
        kind: what it holds (``checkpoint``, ``hf-export``, ...); recorded in the manifest.
        writer: writes the files into the empty folder it is given.
        overwrite: write even though ``out`` holds files scitune did not write (they are kept).
        extra: more manifest fields (base-weight fingerprints, run id).
        complete_marker: write ``COMPLETE`` after the manifest.
    """
    out = Path(out)
    state = check_output_folder(out, kind, overwrite)
    tmp = make_temp_dir(out.parent, f"{TEMP_PREFIX}{out.name}-")
    try:
        writer(tmp)
        clash = sorted({p.name for p in tmp.iterdir()} & set(state.foreign))
        if clash:
            raise DataError(
                f"{out / clash[0]}: exists and was not written by scitune; move it away or choose another --out"
            )
        fsync_tree(tmp)
        write_manifest(tmp, kind, extra)
        if complete_marker:
            (tmp / COMPLETE).write_text("ok\n")
            apply_umask(tmp / COMPLETE)
            fsync_file(tmp / COMPLETE)
        fsync_dir(tmp)
        _swap_in(tmp, out, state)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)  # our own temp folder: an error before the swap
    return out


def _swap_in(tmp: Path, out: Path, state: FolderState) -> None:
    """Move the finished ``tmp`` into ``out``, taking away only what scitune wrote there before."""
    if not state.exists:
        os.replace(tmp, out)
        fsync_dir(out.parent)
        return
    old = make_temp_dir(out.parent, f"{OLD_PREFIX}{out.name}-")
    if not state.foreign:  # the whole folder is scitune's (or empty): two renames
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        fsync_dir(out.parent)
    else:  # the user's files stay where they are: scitune's old entries leave, the new ones come in
        for name in state.ours:
            os.replace(out / name, old / name)
        names = sorted(p.name for p in tmp.iterdir())
        last = [n for n in (MANIFEST, COMPLETE) if n in names]  # a folder without them is never taken as complete
        for name in [n for n in names if n not in last] + last:
            os.replace(tmp / name, out / name)
        fsync_dir(out)
    shutil.rmtree(old, ignore_errors=True)  # only what scitune wrote (moved there above)


CLAIM = ".scitune-output.json"
"""Marks a folder that a command fills file by file (and resumes): which kind of output it is."""


def claim_output_folder(
    out: str | os.PathLike[str], kind: str, writes: tuple[str, ...], overwrite: bool = False
) -> Path:
    """Take ``out`` for an output that is written file by file and resumed (eval runs, SciFig, the demo).

    A missing or empty folder, or one this ``kind`` claimed before, is taken as it is (a rerun continues it). A
    folder with other files is refused unless ``overwrite``; then the command writes beside them, and a file of
    the user's whose name it would write (``writes``: top-level names or glob patterns) is an error, never replaced.
    """
    import fnmatch

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose another --out")
    marker = out / CLAIM
    if marker.is_file():
        try:
            old = json.loads(marker.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = {}
        if old.get("kind") == kind:
            return out
        if not overwrite:
            raise DataError(
                f"{out}: holds a scitune {old.get('kind', 'output')}, not a {kind}; choose another --out, "
                "or pass --overwrite (only scitune's own files are replaced)"
            )
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    foreign = [e for e in entries if e != CLAIM]
    if foreign and not marker.is_file():
        if not overwrite:
            raise DataError(_refusal(out, FolderState(True, None, [], foreign), kind))
        clash = [e for e in foreign if any(fnmatch.fnmatch(e, w) for w in writes)]
        if clash:
            raise DataError(
                f"{out / clash[0]}: exists and was not written by scitune; move it away or choose another --out"
            )
    out.mkdir(parents=True, exist_ok=True)
    from scitune import __version__

    record = {"kind": kind, "scitune_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if foreign:
        record["not_scitune"] = foreign  # the user's files, there before scitune wrote anything
    from scitune.io import write_json

    write_json(marker, record)
    return out
