"""Tokenization that builds labels per segment while encoding: only assistant tokens are trained."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scitune.data.conversation import Message
from scitune.data.templates import ChatTemplate, Segment

IGNORE_INDEX = -100


@dataclass
class Encoded:
    """Token ids and labels (``IGNORE_INDEX`` where not trained) of one sample."""

    input_ids: list[int]
    labels: list[int]
    n_images: int

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class ImageSlots:
    """How an image placeholder becomes tokens: ``count`` copies of ``token_id``."""

    placeholder: str
    token_id: int
    count: int


def _encode_text(tokenizer: Any, text: str, slots: ImageSlots) -> tuple[list[int], int]:
    ids: list[int] = []
    pieces = text.split(slots.placeholder)
    for i, piece in enumerate(pieces):
        if i:
            ids.extend([slots.token_id] * slots.count)
        if piece:
            ids.extend(tokenizer(piece, add_special_tokens=False)["input_ids"])
    return ids, len(pieces) - 1


def encode_segments(segments: list[Segment], tokenizer: Any, slots: ImageSlots, add_bos: bool) -> Encoded:
    """Tokenize each segment and label it at once (trainable segments keep their ids as labels)."""
    ids: list[int] = []
    labels: list[int] = []
    if add_bos and tokenizer.bos_token_id is not None:
        ids.append(tokenizer.bos_token_id)
        labels.append(IGNORE_INDEX)
    n_images = 0
    for seg in segments:
        seg_ids, n = _encode_text(tokenizer, seg.text, slots)
        if n and seg.trainable:
            raise ValueError("an assistant turn contains the image placeholder; images belong in human turns")
        n_images += n
        ids.extend(seg_ids)
        labels.extend(seg_ids if seg.trainable else [IGNORE_INDEX] * len(seg_ids))
    return Encoded(ids, labels, n_images)


def encode_conversation(messages: list[Message], tokenizer: Any, template: ChatTemplate, slots: ImageSlots) -> Encoded:
    """Encode a whole conversation for training."""
    return encode_segments(template.render(messages, tokenizer), tokenizer, slots, template.add_bos)


def encode_prompt(messages: list[Message], tokenizer: Any, template: ChatTemplate, slots: ImageSlots) -> Encoded:
    """Encode a conversation that ends with a user turn, plus the assistant prefix, for generation."""
    return encode_segments(template.render_prompt(messages, tokenizer), tokenizer, slots, template.add_bos)
