"""LLaVA JSON and ShareGPT conversations <-> canonical records: import either layout, export to either layout.

LLaVA: ``{"id", "image"?, "conversations": [{"from": "human"|"gpt", "value"}]}``, a JSON list (or JSONL).
ShareGPT: ``{"id"?, "conversations": [{"from": "system"|"human"|"gpt", "value"}], "images"?}``; the
``messages`` / ``role`` / ``content`` spelling of the same layout is read too.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from scitune.config.schema import DEFAULT_IMAGE_TOKEN as IMAGE_TOKEN
from scitune.io import DataError
from scitune.sources.converters.base import CONVERTERS
from scitune.sources.converters.reading import read_record_source, write_record_file

logger = logging.getLogger(__name__)

HUMAN_ROLES = ("human", "user")
GPT_ROLES = ("gpt", "assistant", "chatgpt", "bard", "bing", "model")
"""Speaker names read as the assistant (ShareGPT dumps use several)."""
EXPORT_FORMATS = ("llava-json", "sharegpt")
_LAYOUT_KEYS = {"id", "image", "images", "conversations", "messages", "system", "meta"}
_REPORT_IDS = 20


def _turns(raw: dict[str, Any], where: str) -> list[tuple[str, str]]:
    """``(role, text)`` per turn, role in human | gpt | system; structural problems raise `DataError`."""
    key = "conversations" if "conversations" in raw else "messages"
    turns = raw.get(key)
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: needs a non-empty 'conversations' (or 'messages') list, got {turns!r:.60}")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise DataError(f"{where}: turn {i} must be an object, got {type(turn).__name__}")
        role = turn.get("from", turn.get("role"))
        text = turn.get("value", turn.get("content"))
        if not isinstance(text, str):
            raise DataError(f"{where}: turn {i} needs a string 'value' (or 'content'), got {text!r:.60}")
        name = str(role).lower()
        if name in HUMAN_ROLES:
            out.append(("human", text))
        elif name in GPT_ROLES:
            out.append(("gpt", text))
        elif name == "system":
            if i != 0:
                raise DataError(f"{where}: turn {i} is a system turn; only the first turn may be one")
            out.append(("system", text))
        else:
            known = ", ".join((*HUMAN_ROLES, *GPT_ROLES, "system"))
            raise DataError(f"{where}: turn {i} has unsupported role {role!r} (known: {known})")
    return out


def _images(raw: dict[str, Any], where: str) -> list[str]:
    """The record's image paths from ``image`` (a path or a list) or ``images`` (a list)."""
    found = []
    for key in ("image", "images"):
        value = raw.get(key)
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise DataError(f"{where}: {key!r} must be a path or a list of paths, got {value!r:.60}")
        if found and found != value:
            raise DataError(f"{where}: 'image' and 'images' disagree ({found} vs {value})")
        found = value
    return list(found)


def normalize_conversation(
    raw: Any, where: str, default_id: str, source: str = "llava-json", add_image_token: bool = True
) -> tuple[dict[str, Any], list[str]]:
    """One LLaVA-JSON or ShareGPT record as a canonical record.

    Args:
        raw: The source record.
        where: Location for error messages (file and record).
        default_id: Id used when the record has none.
        source: ``meta["source"]`` of a record that brings no ``meta`` of its own.
        add_image_token: A record with images but no ``<image>`` in any human turn gets one ``<image>\\n`` per
            image at the start of its first human turn (LLaVA's placement); otherwise that is an error.

    Returns:
        ``(record, notes)``: the record ``{"id", "image", "conversations", ["system"], "meta"}`` (``image`` a path,
        a list of paths or None; a first system turn becomes ``system``; keys of no known layout go to
        ``meta["extra"]``) and notes among ``"no_id"``, ``"added_image_token"``.

    Raises:
        DataError: Not an object, no turns, a bad turn or role, bad image fields, or placeholders that do not match
            the images.
    """
    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    notes = []
    rec_id = raw.get("id")
    if rec_id is None or rec_id == "":
        rec_id, notes = default_id, ["no_id"]
    where = f"{where} (id {str(rec_id)!r})"
    turns = _turns(raw, where)
    images = _images(raw, where)
    system = raw.get("system")
    if turns[0][0] == "system":
        system = turns.pop(0)[1]
    if system is not None and not isinstance(system, str):
        raise DataError(f"{where}: 'system' must be a string, got {system!r:.60}")
    if not turns:
        raise DataError(f"{where}: has a system turn only")
    conversations = [{"from": role, "value": text} for role, text in turns]
    if any(IMAGE_TOKEN in t["value"] for t in conversations if t["from"] == "gpt"):
        raise DataError(f"{where}: an assistant (gpt) turn contains {IMAGE_TOKEN}; images belong in human turns")
    n_tokens = sum(t["value"].count(IMAGE_TOKEN) for t in conversations)
    if images and n_tokens == 0 and add_image_token:
        first = next((t for t in conversations if t["from"] == "human"), None)
        if first is None:
            raise DataError(f"{where}: has images but no human turn to put {IMAGE_TOKEN} in")
        first["value"] = f"{IMAGE_TOKEN}\n" * len(images) + first["value"]
        notes.append("added_image_token")
    elif n_tokens != len(images):
        raise DataError(f"{where}: {n_tokens} {IMAGE_TOKEN} placeholder(s) but {len(images)} image(s)")
    record: dict[str, Any] = {"id": str(rec_id), "image": images[0] if len(images) == 1 else (images or None)}
    record["conversations"] = conversations
    if system is not None:
        record["system"] = system
    meta = raw.get("meta")
    meta = dict(meta) if isinstance(meta, dict) else {"source": source}
    extra = {k: v for k, v in raw.items() if k not in _LAYOUT_KEYS}
    if extra:
        meta["extra"] = {**meta.get("extra", {}), **extra}
    record["meta"] = meta
    return record, notes


def import_conversations(
    located: list[tuple[str, Any]], source: str = "llava-json", add_image_token: bool = True
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Normalise located source records (see `normalize_conversation`) and report on them.

    Returns:
        ``(records, report)``; the report counts records, records with images and text-only ones, images,
        records given a generated id, records given an ``<image>`` token, duplicate ids, and records whose turns
        do not alternate human/gpt starting with human (kept: ``scitune data validate`` rejects them).
    """
    records, notes = [], Counter()
    ids: dict[str, list[str]] = {"no_id": [], "added_image_token": [], "not_alternating": []}
    for i, (where, raw) in enumerate(located):
        record, rec_notes = normalize_conversation(raw, where, f"{source}-{i}", source, add_image_token)
        for note in rec_notes:
            ids[note].append(record["id"])
        roles = [t["from"] for t in record["conversations"]]
        if roles != ["human", "gpt"] * (len(roles) // 2) + ["human"] * (len(roles) % 2):
            ids["not_alternating"].append(record["id"])
        records.append(record)
        notes["images"] += len(_images(record, where))
    duplicates = [k for k, n in Counter(r["id"] for r in records).items() if n > 1]
    with_image = sum(r["image"] is not None for r in records)
    report = {"records": len(records), "with_image": with_image, "text_only": len(records) - with_image,
              "images": notes["images"], "duplicate_ids": duplicates[:_REPORT_IDS]}  # fmt: skip
    for key, values in ids.items():
        report[key] = len(values)
        report[f"{key}_ids"] = values[:_REPORT_IDS]
        if values:
            logger.warning("%d of %d records: %s (first ids: %s)", len(values), len(records), key, values[:5])
    if duplicates:
        logger.warning("%d ids occur more than once (first: %s)", len(duplicates), duplicates[:5])
    return records, report


def to_llava(record: dict[str, Any], with_meta: bool = False) -> dict[str, Any]:
    """A canonical record in LLaVA's layout: no ``image`` key when text-only (as LLaVA writes), the system
    message kept as ``system`` (LLaVA's loaders ignore it), ``meta`` only ``with_meta``."""
    out: dict[str, Any] = {"id": record["id"]}
    if record.get("image") is not None:
        out["image"] = record["image"]
    out["conversations"] = [{"from": t["from"], "value": t["value"]} for t in record["conversations"]]
    if record.get("system") is not None:
        out["system"] = record["system"]
    if with_meta and "meta" in record:
        out["meta"] = record["meta"]
    return out


def to_sharegpt(record: dict[str, Any], with_meta: bool = False) -> dict[str, Any]:
    """A canonical record in ShareGPT's layout: the system message as a first ``system`` turn, images as an
    ``images`` list (only when there are some), ``meta`` only ``with_meta``."""
    turns = [{"from": t["from"], "value": t["value"]} for t in record["conversations"]]
    if record.get("system") is not None:
        turns.insert(0, {"from": "system", "value": record["system"]})
    out: dict[str, Any] = {"id": record["id"], "conversations": turns}
    image = record.get("image")
    if image is not None:
        out["images"] = [image] if isinstance(image, str) else list(image)
    if with_meta and "meta" in record:
        out["meta"] = record["meta"]
    return out


def export_conversations(records: list[dict[str, Any]], fmt: str, with_meta: bool = False) -> list[dict[str, Any]]:
    """Canonical records in ``fmt`` (``llava-json`` or ``sharegpt``)."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(EXPORT_FORMATS)}")
    convert = to_llava if fmt == "llava-json" else to_sharegpt
    return [convert(r, with_meta) for r in records]


def export_file(data: str, out: str, fmt: str, with_meta: bool = False) -> dict[str, Any]:
    """Read records of any conversation layout from ``data`` and write them to ``out`` in ``fmt``, atomically.

    Args:
        data: JSONL or JSON-list file (canonical, LLaVA JSON or ShareGPT records).
        out: Output path; ``.json`` writes a JSON list, anything else JSONL.
        fmt: ``llava-json`` or ``sharegpt``.
        with_meta: Keep each record's ``meta``.

    Returns:
        The import report with the output path and format.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(EXPORT_FORMATS)}")
    records, report = import_conversations(read_record_source(data), source="canonical")
    write_record_file(out, export_conversations(records, fmt, with_meta))
    return {"format": fmt, "out": str(out), **report}


class ConversationConverter:
    """Shared ``run`` of the LLaVA-JSON and ShareGPT importers."""

    source = "llava-json"

    def run(self, src: str, out: str, add_image_token: bool = True) -> dict[str, Any]:
        """Import a conversation file and write canonical records atomically.

        Args:
            src: A JSON list or JSONL file of LLaVA-JSON or ShareGPT records (either layout is read).
            out: Output path; ``.json`` writes a JSON list, anything else JSONL.
            add_image_token: Give a record with images but no ``<image>`` one per image at the start of its first
                human turn (LLaVA's placement); ``False`` makes that an error.

        Returns:
            The import report (counts, generated ids, added image tokens, duplicates, non-alternating turns).
        """
        records, report = import_conversations(read_record_source(src), self.source, add_image_token)
        write_record_file(out, records)
        return {"converter": self.source, "out": str(out), **report}


@CONVERTERS.register("llava-json")
class LlavaJsonConverter(ConversationConverter):
    """``scitune convert llava-json``: LLaVA JSON (or ShareGPT) conversations -> canonical records."""

    source = "llava-json"
