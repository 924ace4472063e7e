"""Tokenization that builds labels per segment while encoding: only assistant tokens are trained."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from scitune.data.conversation import Message
from scitune.data.templates import Segment

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
    """How an image placeholder becomes tokens: ``count`` copies of ``token_id`` per image (between ``before`` and
    ``after``). Built by `scitune.processor.Processor` only.

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
    before: tuple[int, ...] = ()
    """Token ids put before each image's tokens (LLaVA's ``<im_start>``)."""
    after: tuple[int, ...] = ()
    """Token ids put after each image's tokens (LLaVA's ``<im_end>``)."""

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


def _encode_text(tokenizer: Any, text: str, slots: ImageSlots | None, first_image: int = 0) -> tuple[list[int], int]:
    ids: list[int] = []
    pieces = text.split(slots.placeholder) if slots is not None else [text]
    for i, piece in enumerate(pieces):
        if i:
            ids.extend([*slots.before, *[slots.token_id] * slots.count_of(first_image + i - 1), *slots.after])
        if piece:
            ids.extend(tokenizer(piece, add_special_tokens=False)["input_ids"])
    return ids, len(pieces) - 1


def encode_segments(segments: list[Segment], tokenizer: Any, slots: ImageSlots | None, add_bos: bool) -> Encoded:
    """Tokenize each segment and label it at once (trainable segments keep their ids as labels).

    ``slots`` None: text-only (no image placeholder is expanded).
    """
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


class TextEncoder(Protocol):
    """What the data path needs of a processor (`scitune.processor.Processor`): its image placeholder, how many
    tokens an image takes, and the encoding of a conversation."""

    image_token: str

    def encode(
        self, messages: list[Message], sizes: Sequence[tuple[int, int]] = (), prompt: bool = False
    ) -> Encoded: ...

    def image_tokens(self, size: tuple[int, int] | None = None) -> int: ...
