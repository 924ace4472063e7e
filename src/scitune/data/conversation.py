"""Canonical records (LLaVA conversation schema) and their messages; structural checks.

Records in the chat ``messages`` form (OpenAI's and Hugging Face's: ``role`` / ``content``, the content a string or
a list of ``text`` / ``image`` / ``image_url`` parts) are read too: `from_messages` turns them into the canonical
form, each image part becoming an image placeholder where it stands."""

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


_IMAGE_PARTS = ("image", "image_url")


def _part_image(part: dict[str, Any], where: str) -> str | None:
    """The path an image content part names (None: the path is in the record's ``images`` list, HF style)."""
    value = part.get(part["type"])
    if part["type"] == "image_url":
        value = value.get("url") if isinstance(value, dict) else value
    for key in ("path", "url"):
        value = value if value is not None else part.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: an image part needs a path (a string), got {value!r}")
    if value.startswith("file://"):
        return value[len("file://") :]
    if value.startswith(("data:", "http://", "https://")):
        raise ValueError(f"{where}: {value[:30]}...: training records take image paths (relative to the image root), "
                         "not data URLs or web addresses; save the image and give its path")  # fmt: skip
    return value


def from_messages(record: dict[str, Any], token: str = DEFAULT_IMAGE_TOKEN) -> dict[str, Any]:
    """A ``messages`` record (role/content; content a string or a list of parts) in the canonical form: a first
    ``system`` message becomes ``system``, image parts become ``token`` where they stand (parts joined by a newline),
    their paths the ``image`` list (parts without a path take the record's ``images`` in order, as HF datasets
    store them). Any other record is returned as it is."""
    msgs = record.get("messages")
    if "conversations" in record or not isinstance(msgs, list):
        return record
    out = {k: v for k, v in record.items() if k not in ("messages", "images")}
    listed = record.get("images") or []
    if isinstance(listed, str):
        listed = [listed]
    paths: list[str] = []
    n_listed = 0
    conv: list[dict[str, str]] = []
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ValueError(f"{where} must be an object with a string 'role'")
        content = m.get("content")
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            pieces = []
            for j, part in enumerate(content):
                pw = f"{where}.content[{j}]"
                if isinstance(part, str):
                    pieces.append(part)
                    continue
                if not isinstance(part, dict) or part.get("type") not in ("text", *_IMAGE_PARTS):
                    raise ValueError(f"{pw}: expected a text, image or image_url part, got {part!r:.60}")
                if part["type"] == "text":
                    if not isinstance(part.get("text"), str):
                        raise ValueError(f"{pw}: a text part needs a string 'text'")
                    pieces.append(part["text"])
                    continue
                path = _part_image(part, pw)
                if path is None:
                    if n_listed >= len(listed):
                        raise ValueError(f"{pw}: an image part without a path, and the record's 'images' list has "
                                         f"only {len(listed)}")  # fmt: skip
                    path, n_listed = listed[n_listed], n_listed + 1
                paths.append(path)
                pieces.append(token)
            text = "\n".join(pieces)
        else:
            raise ValueError(f"{where}: 'content' must be a string or a list of parts")
        if i == 0 and m["role"] == "system" and "system" not in out:
            out["system"] = text
            continue
        conv.append({"from": m["role"], "value": text})
    if n_listed < len(listed):
        raise ValueError(f"the record lists {len(listed)} images but its messages have {n_listed} image parts")
    out["conversations"] = conv
    if paths:
        out["image"] = paths if len(paths) > 1 else paths[0]
    return out


def record_images(record: dict[str, Any]) -> list[str]:
    """The record's image paths in order (``image`` may be a string, a list or null/absent; ``messages`` records:
    their image parts)."""
    record = from_messages(record)
    img = record.get("image")
    if img is None or img == "":
        return []
    if isinstance(img, str):
        return [img]
    if isinstance(img, list) and all(isinstance(x, str) for x in img):
        return list(img)
    raise ValueError(f"'image' must be a path, a list of paths or null, got {type(img).__name__}")


def record_messages(record: dict[str, Any], token: str = DEFAULT_IMAGE_TOKEN) -> list[Message]:
    """Turn a record's ``conversations`` (or ``messages``, see `from_messages`) into messages, checking the structure.

    Raises:
        ValueError: no conversations, an unknown role, non-alternating roles, or no assistant turn.
    """
    record = from_messages(record, token)
    conv = record.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise ValueError("record has no 'conversations' list (LLaVA's from/value turns) or 'messages' list "
                         "(role/content)")  # fmt: skip
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
    record = from_messages(record, token)
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
