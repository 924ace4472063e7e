"""LLaVA's released GPT-4 prompt folders (``playground/data/prompts/<type>/``: ``system_message.txt`` and few-shot
pairs ``NNN_caps.txt`` (context) / ``NNN_conv.txt`` (response)) read as they are, for ``--examples``."""

from __future__ import annotations

import os
from pathlib import Path

from scitune.io import DataError, read_text

__all__ = ["LLAVA_PROMPT_DIRS", "llava_prompt_dir", "read_llava_prompts"]

LLAVA_PROMPT_DIRS = {"conversation": "conversation", "detail": "detail_description", "complex": "complex_reasoning"}
"""scitune's response type -> the folder name LLaVA's release uses for it."""


def llava_prompt_dir(folder: str | os.PathLike[str], rtype: str) -> Path | None:
    """The LLaVA-layout folder for ``rtype`` under ``folder`` (``folder/<LLaVA's name>/`` or ``folder`` itself when
    it holds a ``system_message.txt``), or None when ``folder`` is not in LLaVA's layout."""
    for d in (Path(folder) / LLAVA_PROMPT_DIRS[rtype], Path(folder)):
        if (d / "system_message.txt").is_file():
            return d
    return None


def read_llava_prompts(folder: str | os.PathLike[str]) -> tuple[str, list[tuple[str, str]]]:
    """The system message and the (context, response) few-shot pairs of one LLaVA prompt folder, in file order.

    Raises:
        DataError: a ``NNN_caps.txt`` without its ``NNN_conv.txt`` (or the reverse), or no pair at all.
    """
    d = Path(folder)
    system = read_text(d / "system_message.txt").strip()
    caps = {p.name[: -len("_caps.txt")]: p for p in d.glob("*_caps.txt")}
    convs = {p.name[: -len("_conv.txt")]: p for p in d.glob("*_conv.txt")}
    unpaired = sorted(set(caps) ^ set(convs))
    if unpaired:
        k = unpaired[0]
        have, lacks = (f"{k}_caps.txt", f"{k}_conv.txt") if k in caps else (f"{k}_conv.txt", f"{k}_caps.txt")
        raise DataError(f"{d / have}: few-shot file without its {lacks}")
    if not caps:
        raise DataError(f"{d}: no NNN_caps.txt / NNN_conv.txt few-shot pairs beside system_message.txt")
    return system, [(read_text(caps[k]).strip(), read_text(convs[k]).strip()) for k in sorted(caps)]
