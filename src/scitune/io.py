"""File helpers shared by every subpackage: durable atomic writes (temp file, fsync, rename, fsync of the folder,
the user's umask) and JSON/JSONL reading whose errors name the file and line."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Bad input data; the message names the file, the record and the problem."""


_UMASK: int | None = None


def umask() -> int:
    """The process's umask (read once: ``os.umask`` can only be read by setting it)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


def apply_umask(path: str | os.PathLike[str], directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have (``tempfile`` makes 0600 files, 0700 folders)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


def fsync_file(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or a new entry in folder ``path`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover (some filesystems refuse fsync on folders)
        pass
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike[str]) -> None:
    """fsync every file and folder under ``root`` (children before their folder)."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            full = os.path.join(folder, name)
            if not os.path.islink(full):
                fsync_file(full)
        fsync_dir(folder)


def make_temp_dir(parent: str | os.PathLike[str], prefix: str) -> Path:
    """A new hidden folder in ``parent`` (same filesystem, so it can be renamed into place), with the umask's mode."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    apply_umask(tmp, directory=True)
    return tmp


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it over ``path``, on error delete it.

    The file gets the mode the umask gives, and the folder is fsynced after the rename, so a crash leaves either the
    old file or the new one, never a torn one.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, "is a folder, not a file", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        apply_umask(tmp_path)
        fsync_file(tmp_path)
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> int:
    """Write ``records`` one JSON object per line to ``path`` atomically; return the count."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def check_input_file(path: str | os.PathLike[str], what: str = "file") -> Path:
    """``path`` as a `Path` if it is an existing regular file; otherwise a `DataError` saying what it is instead.

    A FIFO, socket or device is refused before anything opens it (opening a FIFO blocks until a writer comes).
    """
    import stat

    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except NotADirectoryError:
        raise DataError(f"{path}: {what} not found (a part of the path is not a folder)") from None
    except PermissionError:
        raise DataError(f"{path}: permission denied") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{path}: is a folder, not a {what}")
    if not stat.S_ISREG(mode):
        raise DataError(f"{path}: not a regular file (a FIFO, socket or device); give a {what}")
    return path


def not_utf8(path: str | os.PathLike[str], line: int, offset: int, byte: int | None) -> DataError:
    """The `DataError` for the first byte of ``path`` that is not UTF-8: file, line and byte offset."""
    bad = f"byte 0x{byte:02x} at offset {offset}" if byte is not None else "a truncated character"
    return DataError(
        f"{path}:{line}: not UTF-8 text ({bad}); re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8"
    )


def iter_text_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` of a UTF-8 file; bytes that are not UTF-8 raise `DataError` naming the line."""
    path = check_input_file(path)
    offset = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                at = e.start + (3 if lineno == 1 and raw.startswith(b"\xef\xbb\xbf") else 0)
                raise not_utf8(path, lineno, offset + at, raw[at] if at < len(raw) else None) from None
            offset += len(raw)
            yield lineno, text


def read_text(path: str | os.PathLike[str]) -> str:
    """A whole UTF-8 text file; bytes that are not UTF-8 raise `DataError` naming the line."""
    path = check_input_file(path)
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        at = e.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)
        raise not_utf8(path, raw.count(b"\n", 0, at) + 1, at, raw[at] if at < len(raw) else None) from None


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; a syntax error or non-UTF-8 bytes name the file, line and column."""
    path = Path(path)
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}:{e.colno}: malformed JSON: {e.msg}") from None


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line; a bad line raises `DataError` naming it."""
    path = Path(path)
    for lineno, line in iter_text_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: malformed JSON line: {e.msg} (column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def read_log_lines(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of an append-only JSONL log (metrics, predictions) that scitune writes line by line.

    A kill can cut the last line short: such a torn last line is dropped with a warning. A bad line anywhere else
    is damage, not an interrupted append, and raises `DataError` naming it.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = [(n, t) for n, t in iter_text_lines(path) if t.strip()]
    out: list[dict[str, Any]] = []
    for i, (lineno, line) in enumerate(lines):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                log.warning("%s:%d: dropping a torn last line (an interrupted write)", path, lineno)
                break
            raise DataError(f"{path}:{lineno}: malformed JSON line: {e.msg} (column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        out.append(obj)
    return out


def read_records(path: str | os.PathLike[str]) -> list[tuple[str, dict[str, Any]]]:
    """Read records from a JSONL file or a JSON list file (LLaVA's format), each with a location string."""
    path = Path(path)
    if path.suffix == ".json":
        data = read_json(path)
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
        out = []
        for i, rec in enumerate(data):
            if not isinstance(rec, dict):
                raise DataError(f"{path}: record #{i}: expected a JSON object, got {type(rec).__name__}")
            out.append((f"{path}: record #{i}", rec))
        return out
    return [(f"{path}:{lineno}", obj) for lineno, obj in iter_jsonl(path)]
