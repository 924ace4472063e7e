"""Tokenization that builds labels per segment while encoding: only assistant tokens are trained."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
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
    """How an image placeholder becomes tokens: ``count`` copies of ``token_id`` per image.

    With AnyRes an image's count follows its tile grid: ``count_for_size`` maps an image's (width, height) to its
    count (the model's `image_token_count`), and `for_images` fixes the counts of one sample's images in order.
    """

    placeholder: str
    token_id: int
    count: int
    count_for_size: Callable[[tuple[int, int]], int] | None = None
    """AnyRes: image (width, height) -> its token count; None = every image takes ``count`` tokens."""
    per_image: tuple[int, ...] | None = None
    """AnyRes: the token count of each image of one sample, in order (set by `for_images`)."""

    def for_images(self, sizes: Sequence[tuple[int, int]]) -> ImageSlots:
        """The slots of one sample whose images have these (width, height) sizes (unchanged without AnyRes)."""
        if self.count_for_size is None:
            return self
        return replace(self, per_image=tuple(int(self.count_for_size(tuple(s))) for s in sizes))

    def count_of(self, index: int) -> int:
        """Tokens of the sample's image number ``index`` (0-based)."""
        if self.count_for_size is None:
            return self.count
        if self.per_image is None:
            raise ValueError("image token counts follow each image's size (AnyRes): use ImageSlots.for_images(sizes)")
        if index >= len(self.per_image):
            raise ValueError(f"image placeholder #{index + 1} but only {len(self.per_image)} image(s)")
        return self.per_image[index]


def _encode_text(tokenizer: Any, text: str, slots: ImageSlots, first_image: int = 0) -> tuple[list[int], int]:
    ids: list[int] = []
    pieces = text.split(slots.placeholder)
    for i, piece in enumerate(pieces):
        if i:
            ids.extend([slots.token_id] * slots.count_of(first_image + i - 1))
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
        seg_ids, n = _encode_text(tokenizer, seg.text, slots, n_images)
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
