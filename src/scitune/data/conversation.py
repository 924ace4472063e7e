"""Canonical records (LLaVA conversation schema) and their messages; structural checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scitune.config.schema import DEFAULT_IMAGE_TOKEN

ROLE_OF = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


@dataclass(frozen=True)
class Message:
    """One turn: role is system | user | assistant."""

    role: str
    content: str


def record_images(record: dict[str, Any]) -> list[str]:
    """The record's image paths in order (``image`` may be a string, a list or null/absent)."""
    img = record.get("image")
    if img is None or img == "":
        return []
    if isinstance(img, str):
        return [img]
    if isinstance(img, list) and all(isinstance(x, str) for x in img):
        return list(img)
    raise ValueError(f"'image' must be a path, a list of paths or null, got {type(img).__name__}")


def record_messages(record: dict[str, Any]) -> list[Message]:
    """Turn a record's ``conversations`` into messages, checking the structure.

    Raises:
        ValueError: no conversations, an unknown role, non-alternating roles, or no assistant turn.
    """
    conv = record.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise ValueError("record has no 'conversations' list")
    msgs: list[Message] = []
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise ValueError(f"turn {i} must be an object with a string 'value'")
        role = ROLE_OF.get(str(turn.get("from", "")).lower())
        if role is None:
            raise ValueError(f"turn {i} has unknown role {turn.get('from')!r} (use human/gpt or user/assistant)")
        msgs.append(Message(role, turn["value"]))
    if isinstance(record.get("system"), str):
        msgs.insert(0, Message("system", record["system"]))
    body = msgs[1:] if msgs[0].role == "system" else msgs
    for i, m in enumerate(body):
        want = "user" if i % 2 == 0 else "assistant"
        if m.role != want:
            raise ValueError(f"roles must alternate human, gpt, human, ...: turn {i} is {m.role}, expected {want}")
    if not any(m.role == "assistant" for m in body):
        raise ValueError("record has no assistant (gpt) turn to train on")
    return msgs


def place_image_tokens(
    record: dict[str, Any], placement: str, seed: int = 0, token: str = DEFAULT_IMAGE_TOKEN
) -> dict[str, Any]:
    """Put the image placeholder(s) in the first human turn when the record has images but no placeholder.

    ``placement``: ``as-is`` (leave the record alone), ``before`` / ``after`` the question, or ``random``: before or
    after, drawn per record from ``(seed, id)`` so every run places it the same way (LLaVA's multi-turn data).
    """
    images = record_images(record)
    conv = record.get("conversations")
    if placement == "as-is" or not images or not isinstance(conv, list) or not conv:
        return record
    if any(token in str(t.get("value", "")) for t in conv if isinstance(t, dict)):
        return record
    if placement == "random":
        import random

        placement = random.Random(f"{seed}:{record.get('id', '')}").choice(("before", "after"))
    if placement not in ("before", "after"):
        raise ValueError(f"--data.image_placement must be as-is, before, after or random, got {placement!r}")
    first = dict(conv[0])
    tokens = "\n".join([token] * len(images))
    first["value"] = f"{tokens}\n{first['value']}" if placement == "before" else f"{first['value']}\n{tokens}"
    return {**record, "conversations": [first, *conv[1:]]}
