"""Source files for converters: JSON / JSONL reading that locates non-UTF-8 bytes, and record-file writing."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scitune.io import DataError, check_input_file, not_utf8, read_json, read_records, write_jsonl, write_text


def utf8_error(path: str | os.PathLike[str]) -> DataError:
    """A `DataError` naming the file, line and byte offset of the first byte of ``path`` that is not UTF-8."""
    data = Path(path).read_bytes()
    try:
        data.decode("utf-8")
        offset = 0
    except UnicodeDecodeError as e:  # e.start is relative to the whole file here (one decode call)
        offset = e.start
    return not_utf8(path, data[:offset].count(b"\n") + 1, offset, data[offset] if offset < len(data) else None)


@contextlib.contextmanager
def utf8_located(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a `UnicodeDecodeError` raised while reading ``path`` into a `DataError` that names file and line."""
    try:
        yield
    except UnicodeDecodeError:
        raise utf8_error(path) from None


def read_json_source(path: str | os.PathLike[str]) -> Any:
    """`scitune.io.read_json` that also locates non-UTF-8 bytes."""
    with utf8_located(path):
        return read_json(path)


def read_record_source(path: str | os.PathLike[str]) -> list[tuple[str, dict[str, Any]]]:
    """`scitune.io.read_records` (a JSON list or JSONL) that also locates non-UTF-8 bytes."""
    check_input_file(path, "source file")
    with utf8_located(path):
        records = read_records(path)
    if not records:
        raise DataError(f"{path}: no records (the file is empty)")
    return records


def write_record_file(path: str | os.PathLike[str], records: list[dict[str, Any]]) -> int:
    """Write records atomically: a ``.json`` path gets a JSON list (indent 2, UTF-8), any other path JSONL."""
    if str(path).endswith(".json"):
        write_text(path, json.dumps(records, indent=2, ensure_ascii=False) + "\n")
        return len(records)
    return write_jsonl(path, records)
