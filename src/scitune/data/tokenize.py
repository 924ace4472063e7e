"""Tokenization that labels while encoding: only the tokens of assistant (trainable) segments are trained."""

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
            ids.extend(_image_ids(slots, first_image + i - 1))
        if piece:
            ids.extend(tokenizer(piece, add_special_tokens=False)["input_ids"])
    return ids, len(pieces) - 1


def _image_ids(slots: ImageSlots, index: int) -> list[int]:
    return [*slots.before, *[slots.token_id] * slots.count_of(index), *slots.after]


def encode_segments(segments: list[Segment], tokenizer: Any, slots: ImageSlots | None, add_bos: bool) -> Encoded:
    """Tokenize a rendered conversation and label it: tokens of trainable segments keep their ids as labels.

    With a fast tokenizer the whole text is tokenized at once (image placeholders split it, as the special tokens
    they are), so the ids are those of the text, as LLaVA's preprocessing and ``apply_chat_template`` give them, not
    of each segment on its own (they differ where a segment ends in a space); a token is trained when its last
    character belongs to a trainable segment. A slow tokenizer (no offsets) tokenizes segment by segment.
    ``slots`` None: text-only (no image placeholder is expanded).
    """
    ids: list[int] = []
    labels: list[int] = []
    if add_bos and tokenizer.bos_token_id is not None:
        ids.append(tokenizer.bos_token_id)
        labels.append(IGNORE_INDEX)
    for seg in segments:
        if seg.trainable and slots is not None and slots.placeholder in seg.text:
            raise ValueError("an assistant turn contains the image placeholder; images belong in human turns")
    if not getattr(tokenizer, "is_fast", False):
        n_images = 0
        for seg in segments:
            seg_ids, n = _encode_text(tokenizer, seg.text, slots, n_images)
            n_images += n
            ids.extend(seg_ids)
            labels.extend(seg_ids if seg.trainable else [IGNORE_INDEX] * len(seg_ids))
        return Encoded(ids, labels, n_images)
    import bisect

    text = "".join(seg.text for seg in segments)
    starts, trainable, pos = [], [], 0
    for seg in segments:
        starts.append(pos)
        trainable.append(seg.trainable)
        pos += len(seg.text)
    pieces = text.split(slots.placeholder) if slots is not None else [text]
    offset = 0
    for i, piece in enumerate(pieces):
        if i:
            image = _image_ids(slots, i - 1)
            ids.extend(image)
            labels.extend([IGNORE_INDEX] * len(image))
            offset += len(slots.placeholder)
        if piece:
            enc = tokenizer(piece, add_special_tokens=False, return_offsets_mapping=True)
            for tid, (s, e) in zip(enc["input_ids"], enc["offset_mapping"]):
                last = offset + (e - 1 if e > s else s)  # the token's last character (an empty span: where it stands)
                ids.append(tid)
                labels.append(tid if trainable[bisect.bisect_right(starts, min(last, pos - 1)) - 1] else IGNORE_INDEX)
        offset += len(piece)
    return Encoded(ids, labels, len(pieces) - 1)


class TextEncoder(Protocol):
    """What the data path needs of a processor (`scitune.processor.Processor`): its image placeholder, how many
    tokens an image takes, and the encoding of a conversation."""

    image_token: str

    def encode(
        self, messages: list[Message], sizes: Sequence[tuple[int, int]] = (), prompt: bool = False
    ) -> Encoded: ...

    def image_tokens(self, size: tuple[int, int] | None = None) -> int: ...
