"""Where each record of a data file lies: one streaming pass over a JSONL file or a LLaVA ``.json`` list gives every
record's byte span (with a progress bar over bytes), and `RecordReader` reads one record back by its span."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from scitune.data.dataset import Problem
from scitune.io import DataError, check_input_file, not_utf8, read_json

BOM = b"\xef\xbb\xbf"
CHUNK = 1 << 23
"""Bytes read at a time (8 MiB)."""
_WS = re.compile("[ \t\n\r]*")
MIN_SPLIT = 1 << 26
"""Files smaller than this (64 MiB) are not cut into parts (`RecordFile.split`)."""
Part = tuple[int, int, int, int, str]
"""A byte range ``[start, end)`` of a file, cut at record boundaries, with its first record's number, the newlines
before ``start`` and (``.json``) the list's separator between elements."""
Scanned = tuple[int, int, int, Any]
"""``(number, start, end, value)``: the record's line (JSONL) or its index in the list (``.json``), its byte span
``[start, end)``, and the parsed value, or a `Problem` for a part that could not be read as JSON."""


def progress_bar(total: int, enabled: bool, desc: str) -> Any:
    """A tqdm bar over ``total`` bytes, shown only when ``enabled`` and stderr is a terminal."""
    from tqdm.auto import tqdm

    on = enabled and sys.stderr.isatty()
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not on, leave=False)


class Quiet:
    """A progress object that shows nothing."""

    def update(self, n: int) -> None:
        pass


class RecordFile:
    """A JSONL file (one record a line) or a ``.json`` file (a list of records, or one record), read as a stream."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = check_input_file(path, "data file")
        self.listed = self.path.suffix == ".json"

    def location(self, number: int) -> str:
        """How problems name a record: ``file:line`` (JSONL) or ``file: record #i`` (``.json``)."""
        return f"{self.path}: record #{number}" if self.listed else f"{self.path}:{number}"

    def scan(self, progress: bool = False, part: Part | None = None, bar: Any = None) -> Iterator[Scanned]:
        """Every record in file order (blank JSONL lines are skipped), or those of one `Part`; see `Scanned`.
        ``bar``: a progress object to update with the bytes read (instead of a bar of its own)."""
        size = self.path.stat().st_size
        own = progress_bar(size, progress, f"checking {self.path.name}") if bar is None else contextlib.nullcontext(bar)
        with open(self.path, "rb") as f, own as bar:
            if not self.listed:
                yield from self._scan_lines(f, bar, part or (0, size, 1, 0, ""))
            elif part is None or part[0] == 0:
                yield from _ListScanner(self.path, f, bar).scan(part[1] if part else None)
            else:
                yield from _ListScanner(self.path, f, bar, part).scan_part(part)

    def split(self, parts: int) -> list[Part] | None:
        """The file cut into up to ``parts`` byte ranges at record boundaries, to be checked side by side; None when
        it is small or cannot be cut safely (a ``.json`` list must be written one element per line)."""
        size = self.path.stat().st_size
        if parts < 2 or size < MIN_SPLIT:
            return None
        with open(self.path, "rb") as f:
            return _split_list(self, f, size, parts) if self.listed else _split_lines(f, size, parts)

    def _scan_lines(self, f: BinaryIO, bar: Any, part: Part) -> Iterator[Scanned]:
        first, stop = part[2], part[1]
        f.seek(part[0])
        offset = shown = part[0]
        for lineno, raw in enumerate(f, start=first):
            if offset >= stop:
                break
            start, offset = offset, offset + len(raw)
            if offset - shown >= CHUNK:
                bar.update(offset - shown)
                shown = offset
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                byte = raw[e.start] if e.start < len(raw) else None
                message = str(not_utf8(self.path, lineno, start + e.start, byte)).split(": ", 2)[-1]
                yield lineno, start, offset, Problem(self.location(lineno), "?", message)
                continue
            if not line.strip():
                continue
            if lineno == 1 and raw.startswith(BOM):
                start += len(BOM)
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                problem = Problem(self.location(lineno), "?", f"malformed JSON line: {e.msg} (column {e.colno})")
                yield lineno, start, offset, problem
                continue
            yield lineno, start, offset, value
        bar.update(offset - shown)


class _ListScanner:
    """Steps through a JSON list one element at a time with `json.JSONDecoder.raw_decode`, over a window of decoded
    text that is refilled from the file, keeping the byte offset of every element."""

    def __init__(self, path: Path, f: BinaryIO, bar: Any, part: Part | None = None):
        self.path, self.f, self.bar = path, f, bar
        self.decoder = json.JSONDecoder()
        if part is None:
            head = f.read(len(BOM))
            self.base = len(BOM) if head == BOM else 0  # byte offset of text[0]
            self.pending = b"" if head == BOM else head  # bytes read but not decoded yet
        else:  # a part starts at an element, after its indentation
            f.seek(part[0])
            self.base, self.pending = part[0], b""
        self.text = ""
        self.ascii = True  # text is ASCII: char index = byte offset - base
        self.cursor = (0, self.base)  # (char index, its byte offset) for non-ASCII text
        self.lines = part[3] if part else 0  # newlines before text[0]
        self.separator = part[4] if part else ""  # between ',' and an element: where a resync looks
        self.column = len(_indent(self.separator)) if part else 0  # chars between the last newline and text[0]
        self.eof = False

    # ---- the window
    def fill(self) -> bool:
        """Decode one more chunk onto the window; False at the end of the file."""
        if self.eof:
            return False
        data = self.f.read(CHUNK)
        self.bar.update(len(data))
        if not data:
            self.eof = True
            data, self.pending = self.pending, b""
            if not data:
                return False
        data, self.pending = self.pending + data, b""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            if e.reason != "unexpected end of data" or self.eof:
                at = self.base + len(self.text.encode("utf-8")) + e.start
                line = self.lines + self.text.count("\n") + data.count(b"\n", 0, e.start) + 1
                raise not_utf8(self.path, line, at, data[e.start] if e.start < len(data) else None) from None
            text, self.pending = data[: e.start].decode("utf-8"), data[e.start :]  # a character cut by the chunk
        self.ascii = self.ascii and text.isascii()
        self.text += text
        return True

    def byte_at(self, i: int) -> int:
        """Byte offset of char ``i`` of the window (calls come in increasing ``i``)."""
        if self.ascii:
            return self.base + i
        ci, bi = self.cursor
        bi += len(self.text[ci:i].encode("utf-8"))
        self.cursor = (i, bi)
        return bi

    def drop(self, i: int) -> int:
        """Forget the window before char ``i``; returns the new index of that char (0)."""
        if i:
            gone = self.text[:i]
            newline = gone.rfind("\n")
            self.lines += gone.count("\n")
            self.column = i - newline - 1 if newline >= 0 else self.column + i
            self.base = self.byte_at(i)
            self.text = self.text[i:]
            self.ascii = self.text.isascii()
            self.cursor = (0, self.base)
        return 0

    def where(self, i: int) -> str:
        """``file:line:column`` of char ``i`` of the window."""
        newline = self.text.rfind("\n", 0, i)
        line = self.lines + self.text.count("\n", 0, i) + 1
        column = i - newline if newline >= 0 else self.column + i + 1
        return f"{self.path}:{line}:{column}"

    def skip_space(self, i: int) -> int:
        """Index of the first non-whitespace char at or after ``i`` (refilling); ``len(text)`` at the end."""
        while True:
            i = _WS.match(self.text, i).end()
            if i < len(self.text) or not self.fill():
                return i

    # ---- the list
    def scan(self, stop: int | None = None) -> Iterator[Scanned]:
        """The list's elements from the start of the file (up to byte ``stop``: the first part)."""
        i = self.skip_space(0)
        if i >= len(self.text):
            return  # an empty file: the caller reports "no records"
        if self.text[i] != "[":
            yield from self._single()
            return
        i = self.skip_space(i + 1)
        self.separator = self.text[:i][self.text.rfind("[", 0, i) + 1 :]
        if i < len(self.text) and self.text[i] == "]":
            yield from self._after_list(i + 1)
            return
        yield from self._elements(i, 0, stop)

    def scan_part(self, part: Part) -> Iterator[Scanned]:
        """The elements of a later part."""
        yield from self._elements(self.skip_space(0), part[2], part[1])

    def _elements(self, i: int, number: int, stop: int | None) -> Iterator[Scanned]:
        while True:
            if i > CHUNK // 2:
                i = self.drop(i)
            at = self.byte_at(i)
            if stop is not None and at >= stop:
                return  # the next part's
            parsed = self._element(i)
            if isinstance(parsed, Problem):
                i = self._resync(i)
                after = (
                    f"; read on from line {self.where(i).split(':')[-2]}" if i >= 0 else "; nothing after it was read"
                )
                yield number, at, at, Problem(parsed.location, "?", f"{parsed.message} (record #{number}){after}")
                number += 1
                if i < 0:
                    return
                continue
            value, end = parsed
            yield number, at, self.byte_at(end), value
            number += 1
            j = self.skip_space(end)
            if j < len(self.text) and self.text[j] == "]":
                yield from self._after_list(j + 1)
                return
            if j >= len(self.text):
                problem = Problem(self.where(j), "?", "malformed JSON: the list is not closed (no ']' at the end)")
                yield number, self.byte_at(j), self.byte_at(j), problem
                return
            if self.text[j] != ",":
                problem = Problem(self.where(j), "?", "malformed JSON: Expecting ',' delimiter")
                yield number, self.byte_at(j), self.byte_at(j), problem
                i = self._resync(end - 1)
                if i < 0:
                    return
                continue
            i = self.skip_space(j + 1)
            if number == 1:  # resyncs look for the separator of the first two elements
                self.separator = self.text[j + 1 : i]

    def _element(self, i: int) -> tuple[Any, int] | Problem:
        """The element starting at char ``i`` and the index just past it, or the `Problem` it has."""
        while True:
            try:
                value, end = self.decoder.raw_decode(self.text, i)
            except json.JSONDecodeError as e:
                # an element cut by the window's end: read on (an unterminated string reports where it starts)
                cut = e.pos >= len(self.text) - 64 or e.msg.startswith("Unterminated string")
                if cut and self.fill():
                    continue
                return Problem(self.where(e.pos), "?", f"malformed JSON: {e.msg}")
            if end < len(self.text) or not self.fill():  # a number or literal at the window's end may go on
                return value, end

    def _resync(self, i: int) -> int:
        """After a malformed element at ``i``: the start of the next element of a list written one element per line
        (found by its indentation), or -1 when there is none (a list on one line cannot be resynced)."""
        if not _indent(self.separator):
            return -1
        mark = "\n" + _indent(self.separator) + "{"
        while True:
            k = self.text.find(mark, i + 1)
            if k >= 0:
                return k + len(mark) - 1
            i = self.drop(max(i, len(self.text) - len(mark) - 1))
            if not self.fill():
                return -1

    def _after_list(self, i: int) -> Iterator[Scanned]:
        j = self.skip_space(i)
        if j < len(self.text):
            yield -1, self.byte_at(j), self.byte_at(j), Problem(self.where(j), "?", "malformed JSON: Extra data")

    def _single(self) -> Iterator[Scanned]:
        """A file that holds one JSON value instead of a list: one record, read whole as before."""
        yield 0, self.base, self.path.stat().st_size, read_json(self.path)


def _indent(separator: str) -> str:
    """The indentation of a list's elements, from the text between ``,`` and an element: only a list written one
    element per line, indented (its nested objects then sit deeper), has one."""
    if "\n" not in separator:
        return ""
    indent = separator[separator.rfind("\n") + 1 :]
    return indent if indent and not indent.strip(" \t") else ""


def _split_lines(f: BinaryIO, size: int, parts: int) -> list[Part] | None:
    starts = [0]
    for j in range(1, parts):
        f.seek(size * j // parts)
        f.readline()
        if starts[-1] < f.tell() < size:
            starts.append(f.tell())
    counts = _count_before(f, starts[1:], None)
    firsts = [1] + [lines + 1 for lines, _ in counts]
    lines = [0] + [n for n, _ in counts]
    ends = [*starts[1:], size]
    return [(a, b, n, k, "") for a, b, n, k in zip(starts, ends, firsts, lines)] if len(starts) > 1 else None


def _split_list(file: RecordFile, f: BinaryIO, size: int, parts: int) -> list[Part] | None:
    """Cut a list written one element per line at lines that start an element (a newline, the elements'
    indentation, ``{``): such a line never occurs inside an element, whose strings cannot hold a raw newline."""
    scanner = _ListScanner(file.path, f, Quiet())
    elements = scanner.scan()
    first, second = next(elements, None), next(elements, None)
    if first is None or second is None or isinstance(first[3], Problem) or isinstance(second[3], Problem):
        return None
    indent = _indent(scanner.separator)
    f.seek(max(0, size - 64))
    if not indent or not f.read().rstrip().endswith(b"]"):
        return None
    mark = ("\n" + indent + "{").encode()
    starts: list[int] = []
    for j in range(1, parts):
        target = max(size * j // parts, second[2])
        f.seek(target)
        k = f.read(1 << 20).find(mark)
        if k >= 0 and target + k + len(mark) - 1 > (starts[-1] if starts else second[1]):
            starts.append(target + k + len(mark) - 1)
    if not starts:
        return None
    f.seek(first[1] - len(mark) + 1)
    unmarked = f.read(len(mark)) != mark  # the first element does not start a line of its own
    counts = _count_before(f, starts, mark)
    ends = [*starts, size]
    out: list[Part] = [(0, starts[0], 0, 0, "")]
    out += [
        (a, b, marks + unmarked, lines, scanner.separator) for a, b, (lines, marks) in zip(starts, ends[1:], counts)
    ]
    return out


def _count_before(f: BinaryIO, bounds: list[int], mark: bytes | None) -> list[tuple[int, int]]:
    """Newlines (and occurrences of ``mark``) in the file before each of ``bounds`` (increasing)."""
    out, pos, lines, marks, tail = [], 0, 0, 0, b""
    f.seek(0)
    for bound in bounds:
        while pos < bound:
            chunk = f.read(min(1 << 24, bound - pos))
            if not chunk:
                break
            pos += len(chunk)
            lines += chunk.count(b"\n")
            if mark:
                window = tail + chunk
                marks += window.count(mark)
                tail = window[1 - len(mark) :]
        out.append((lines, marks))
    return out


class RecordReader:
    """Reads records back by their byte spans (``os.pread``); the file is opened once per process, so a reader can be
    sent to data-loader workers."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = str(path)
        self._fd: int | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_fd": None, "_pid": -1}

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)

    def read(self, start: int, end: int) -> Any:
        """The JSON value stored at bytes ``[start, end)``; `DataError` when it is not readable JSON any more."""
        if self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        raw = os.pread(self._fd, end - start, start)
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"the record is not readable JSON any more (the file changed?): {e}") from None
