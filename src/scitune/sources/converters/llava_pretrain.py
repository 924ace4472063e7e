"""LLaVA's alignment data as released: CC3M-595K (``chat.json``, ``metadata.json``, ``images.zip`` unpacked to
``images/``) and LLaVA-Pretrain 558K (``blip_laion_cc_sbu_558k.json``, ``blip_laion_cc_sbu_558k_meta.json``,
``images/``). The chat file is LLaVA's conversation layout (one instruction + ``<image>``, the caption as the answer);
the metadata file has ``id``, ``image``, ``caption``, ``blip_caption`` and ``url`` per image."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from scitune.io import DataError
from scitune.sources.converters.base import CONVERTERS
from scitune.sources.converters.caption_sets import CaptionItem, CaptionSet, unique_ids
from scitune.sources.converters.llava_json import import_conversations
from scitune.sources.converters.reading import read_json_source, write_record_file

CHAT_FILES = {"chat.json": "metadata.json", "blip_laion_cc_sbu_558k.json": "blip_laion_cc_sbu_558k_meta.json"}
"""Released chat file -> its metadata file."""
SOURCES = {"chat.json": "llava-cc3m-595k", "blip_laion_cc_sbu_558k.json": "llava-pretrain-558k"}


def locate_chat(src: str | os.PathLike[str]) -> Path:
    """The chat file: ``src`` itself, or the released chat file inside the folder ``src``."""
    path = Path(src)
    if path.is_dir():
        for name in CHAT_FILES:
            if (path / name).is_file():
                return path / name
        raise DataError(f"{path}: folder holds no LLaVA pretraining chat file ({', '.join(CHAT_FILES)})")
    return path


def _answer(rec: Any, where: str) -> tuple[str, str]:
    if not isinstance(rec, dict) or not isinstance(rec.get("image"), str):
        raise DataError(f"{where}: needs an 'image' path")
    turns = rec.get("conversations")
    answers = [t.get("value") for t in turns or [] if isinstance(t, dict) and t.get("from") == "gpt"]
    if not answers or not isinstance(answers[-1], str):
        raise DataError(f"{where}: needs a 'conversations' list with a gpt turn (the caption)")
    return str(rec.get("id", Path(rec["image"]).stem)), answers[-1]


def pretrain_caption_set(path: Path, data: list[Any]) -> CaptionSet:
    """A parsed chat file as captions: each image's reference is its (last) assistant turn, the released caption."""
    items = []
    for i, rec in enumerate(data):
        ident, caption = _answer(rec, f"{path}: record #{i}")
        items.append(CaptionItem(ident, rec["image"], [caption], {"source": SOURCES.get(path.name, "llava-pretrain")}))
    return CaptionSet("llava-pretrain", path, unique_ids(items, path), [path.parent / "images", path.parent])


def read_metadata(path: Path) -> dict[str, dict[str, Any]]:
    """``id -> metadata record`` of a released metadata file (``metadata.json`` / ``..._meta.json``)."""
    data = read_json_source(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of metadata records")
    out = {}
    for i, rec in enumerate(data):
        if not isinstance(rec, dict) or "id" not in rec:
            raise DataError(f"{path}: record #{i} needs an 'id'")
        out[str(rec["id"])] = rec
    return out


@CONVERTERS.register("llava-pretrain")
class LlavaPretrainConverter:
    """``scitune convert llava-pretrain``: LLaVA's CC3M-595K / LLaVA-Pretrain 558K release -> canonical records."""

    def run(self, src: str, out: str, with_metadata: bool = True, image_root: str | None = None) -> dict[str, Any]:
        """Import the chat file as released and write canonical records atomically.

        Args:
            src: the release folder (``chat.json`` or ``blip_laion_cc_sbu_558k.json`` inside) or the chat file.
            out: Output path; ``.json`` writes a JSON list, anything else JSONL.
            with_metadata: Copy the metadata file's ``caption``, ``blip_caption`` and ``url`` (when it is there)
                into each record's ``meta``.
            image_root: When given, every record's image must exist under it (``images/`` of the unpacked
                ``images.zip``); the first missing one is named.

        Returns:
            The import report (counts, duplicates, ...) with the output path and the metadata file used.
        """
        chat = locate_chat(src)
        located = [(f"{chat}: record #{i}", r) for i, r in enumerate(_chat_list(chat))]
        source = SOURCES.get(chat.name, "llava-pretrain")
        records, report = import_conversations(located, source)
        meta_path = chat.parent / CHAT_FILES.get(chat.name, "")
        used = with_metadata and chat.name in CHAT_FILES and meta_path.is_file()
        if used:
            metadata = read_metadata(meta_path)
            for rec in records:
                extra = metadata.get(rec["id"], {})
                rec["meta"].update({k: extra[k] for k in ("caption", "blip_caption", "url") if k in extra})
        if image_root is not None:
            for rec in records:
                if not (Path(image_root) / rec["image"]).is_file():
                    raise DataError(f"{chat}: record {rec['id']!r}: image {Path(image_root) / rec['image']} not found")
        write_record_file(out, records)
        return {"converter": "llava-pretrain", "out": str(out), "source": source,
                "metadata": str(meta_path) if used else None, **report}  # fmt: skip


def _chat_list(chat: Path) -> list[Any]:
    data = read_json_source(chat)
    if not isinstance(data, list) or not data:
        raise DataError(f"{chat}: expected a non-empty JSON list of LLaVA conversation records")
    return data
