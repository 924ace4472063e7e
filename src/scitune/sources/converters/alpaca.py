"""Alpaca (``instruction`` / ``input`` / ``output``) -> canonical text-only records, as a converter and as a
reader of training-data mixtures (``format: alpaca``).

Reads Stanford Alpaca's ``alpaca_data.json`` (a JSON list), JSONL, or the Hugging Face parquet release (tatsu-lab/alpaca,
whose extra ``text`` column is ignored). The human turn is the instruction, followed on a new line by the input when
there is one (xtuner's and FastChat's conversion); the assistant turn is the output. Records whose output is
``<nooutput>`` (Alpaca's marker of an instruction without an answer) are left out and counted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from scitune.io import DataError, check_input_file
from scitune.sources.converters.base import CONVERTERS
from scitune.sources.converters.reading import read_record_source, write_record_file

log = logging.getLogger(__name__)
NO_OUTPUT = "<nooutput>"


def read_rows(path: str, what: str) -> list[tuple[str, dict[str, Any]]]:
    """Rows of a JSON list, JSONL or parquet file, each with its location (``file: row #i`` for parquet)."""
    if Path(path).suffix != ".parquet":
        return read_record_source(path)
    from scitune.extras import require

    require(f"reading {what} parquet files", "pyarrow")
    import pyarrow.parquet as pq

    check_input_file(path, "source file")
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # noqa: BLE001 (pyarrow raises several types for a damaged file)
        raise DataError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
    if not rows:
        raise DataError(f"{path}: no records (the table is empty)")
    return [(f"{path}: row #{i}", row) for i, row in enumerate(rows)]


def text_field(row: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    """``row[key]`` as a string ('' when absent and not ``required``); anything else is a `DataError`."""
    value = row.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise DataError(f"{where}: needs a non-empty string {key!r}, got {value!r:.60}")
    return value


def alpaca_record(row: Any, where: str, index: int) -> dict[str, Any] | None:
    """One Alpaca row as a canonical record (None: its output is ``<nooutput>``)."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with instruction/input/output, got {type(row).__name__}")
    instruction = text_field(row, "instruction", where)
    extra = text_field(row, "input", where, required=False)
    output = text_field(row, "output", where)
    if output.strip() == NO_OUTPUT:
        return None
    human = f"{instruction}\n{extra}" if extra.strip() else instruction
    return {
        "id": str(row.get("id", f"alpaca-{index}")),
        "image": None,
        "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": output}],
        "meta": {"source": "alpaca"},
    }


@CONVERTERS.register("alpaca")
class AlpacaConverter:
    """``scitune convert alpaca``: Alpaca instruction/input/output records -> canonical text-only records."""

    def read(self, src: str) -> list[tuple[str, dict[str, Any]]]:
        """The canonical records of ``src`` (JSON list, JSONL or parquet), each with its location."""
        out, skipped = [], 0
        for i, (where, row) in enumerate(read_rows(src, "Alpaca")):
            rec = alpaca_record(row, where, i)
            if rec is None:
                skipped += 1
            else:
                out.append((where, rec))
        if skipped:
            log.info("%s: %d record(s) with output %s left out", src, skipped, NO_OUTPUT)
        return out

    def run(self, src: str, out: str) -> dict[str, Any]:
        """Convert an Alpaca file and write canonical records atomically.

        Args:
            src: ``alpaca_data.json`` (JSON list), JSONL, or the Hugging Face parquet file.
            out: Output path; ``.json`` writes a JSON list, anything else JSONL.
        """
        located = self.read(src)
        write_record_file(out, [r for _, r in located])
        return {"converter": "alpaca", "out": str(out), "records": len(located)}
