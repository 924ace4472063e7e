"""OpenOrca (``id`` / ``system_prompt`` / ``question`` / ``response``) -> canonical text-only records, as a
converter and as a reader of training-data mixtures (``format: openorca``).

Reads the Hugging Face release (Open-Orca/OpenOrca parquet files, e.g. ``1M-GPT4-Augmented.parquet``) or the same
columns as JSONL / a JSON list. A non-empty system prompt becomes the record's ``system`` message (the chat template
puts it where the model expects one); the question is the human turn and the response the assistant turn.
"""

from __future__ import annotations

from typing import Any

from scitune.io import DataError
from scitune.sources.converters.alpaca import read_rows, text_field
from scitune.sources.converters.base import CONVERTERS
from scitune.sources.converters.reading import write_record_file


def openorca_record(row: Any, where: str, index: int) -> dict[str, Any]:
    """One OpenOrca row as a canonical record."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with system_prompt/question/response, got {type(row).__name__}")
    system = text_field(row, "system_prompt", where, required=False)
    record: dict[str, Any] = {
        "id": str(row.get("id") or f"openorca-{index}"),
        "image": None,
        "conversations": [
            {"from": "human", "value": text_field(row, "question", where)},
            {"from": "gpt", "value": text_field(row, "response", where)},
        ],
        "meta": {"source": "openorca"},
    }
    if system.strip():
        record["system"] = system
    return record


@CONVERTERS.register("openorca")
class OpenOrcaConverter:
    """``scitune convert openorca``: OpenOrca system_prompt/question/response rows -> canonical text-only records."""

    def read(self, src: str) -> list[tuple[str, dict[str, Any]]]:
        """The canonical records of ``src`` (parquet, JSONL or JSON list), each with its location."""
        return [(where, openorca_record(row, where, i)) for i, (where, row) in enumerate(read_rows(src, "OpenOrca"))]

    def run(self, src: str, out: str) -> dict[str, Any]:
        """Convert an OpenOrca file and write canonical records atomically.

        Args:
            src: an OpenOrca parquet file, or the same columns as JSONL / a JSON list.
            out: Output path; ``.json`` writes a JSON list, anything else JSONL.
        """
        located = self.read(src)
        write_record_file(out, [r for _, r in located])
        return {"converter": "openorca", "out": str(out), "records": len(located)}
