"""The processor: one object that owns the tokenizer, the image processor, the chat template, the image token and
the rule for how many tokens an image becomes, and turns messages + images into model inputs and labels. Training,
validation, statistics, generation, serving, evaluation, the demo and export all make their inputs through it, and
it is saved beside the weights of every checkpoint (HF tokenizer and image-processor folders + ``processor.json``)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from scitune.config.schema import DEFAULT_IMAGE_TOKEN
from scitune.data.conversation import Message
from scitune.data.templates import ChatTemplate, get_template
from scitune.data.tokenize import Encoded, ImageSlots, encode_segments
from scitune.io import write_json
from scitune.model.anyres import (
    LAYOUTS,
    Grid,
    format_grid,
    llava_next_token_count,
    parse_grids,
    select_grid,
    split_tiles,
)

PROCESSOR_FILE = "processor.json"
IMAGE_ASPECTS = ("resize", "pad")
FORMAT_VERSION = 1
IM_START, IM_END = "<im_start>", "<im_end>"
"""LLaVA's ``mm_use_im_start_end`` tokens around each image's tokens."""


@dataclass(frozen=True)
class ImageTokenRule:
    """How many tokens an image becomes in the text.

    Fixed: ``tokens_per_tile`` per image. AnyRes (``grids``): the image is cut into the best-fitting grid of
    ``tile_size`` tiles plus one overview, and ``layout`` (`scitune.model.anyres.LAYOUTS`) says what the text holds:
    ``llava-next`` (the default) the overview's ``tokens_per_tile`` (a square feature map), then the tiles' stitched
    map with its padding cut off, one more token (the newline) per row, exactly as transformers'
    ``LlavaNextProcessor`` counts; ``tiles`` (older checkpoints) ``tokens_per_tile`` per tile and overview.
    ``start_end`` puts ``<im_start>`` before and ``<im_end>`` after each image's tokens (two more tokens, ordinary
    vocabulary entries).
    """

    tokens_per_tile: int
    tile_size: int = 0
    grids: tuple[Grid, ...] = ()
    start_end: bool = False
    layout: str = "llava-next"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"AnyRes layout must be one of {LAYOUTS}, got {self.layout!r}")
        side = math.isqrt(self.tokens_per_tile)
        if self.grids and self.layout == "llava-next" and side * side != self.tokens_per_tile:
            raise ValueError(
                f"AnyRes (llava-next layout) stitches each tile's features into a square map, but a tile gives "
                f"{self.tokens_per_tile} tokens; use --model.vision.select patch and no prefix projector"
            )

    def grid(self, size: tuple[int, int]) -> Grid:
        """AnyRes: the (rows, cols) grid an image of ``size`` = (width, height) is tiled with."""
        return select_grid(size, self.grids, self.tile_size)

    def count(self, size: tuple[int, int] | None = None) -> int:
        """Image tokens (copies of the image token) of an image of ``size`` = (width, height)."""
        if not self.grids:
            return self.tokens_per_tile
        if size is None:
            raise ValueError("with AnyRes an image's token count follows its size: give the image's (width, height)")
        grid = self.grid(tuple(size))
        if self.layout == "llava-next":
            return llava_next_token_count(tuple(size), grid, math.isqrt(self.tokens_per_tile))
        return (grid[0] * grid[1] + 1) * self.tokens_per_tile

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "tokens_per_tile": self.tokens_per_tile,
            "tile_size": self.tile_size,
            "grids": [format_grid(g) for g in self.grids],
            "start_end": self.start_end,
        }
        if self.grids:  # without AnyRes the layout means nothing: processor.json stays as it was
            d["layout"] = self.layout
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageTokenRule:
        grids = parse_grids(d.get("grids", []))
        # an AnyRes processor.json without a layout was written before llava-next existed: its layout is tiles
        layout = d.get("layout", "tiles" if grids else cls.layout)
        return cls(
            int(d["tokens_per_tile"]), int(d.get("tile_size", 0)), grids, bool(d.get("start_end", False)), layout
        )


def expand_to_square(image: Image.Image, fill: tuple[int, ...]) -> Image.Image:
    """``image`` centred on a square canvas of its longer side filled with ``fill`` (LLaVA-1.5's ``expand2square``:
    the offset of the shorter side is ``(long - short) // 2``); a square image is returned as it is."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), fill if image.mode == "RGB" else fill[0])
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


class AnyResImageProcessor:
    """Wraps a HF image processor: each image becomes its overview + grid tiles, all flattened in order.

    Called like the HF processor, it returns ``pixel_values`` (sum of tiles, C, S, S), image by image with the
    overview first, and ``image_grids`` (n_images, 4) = (rows, cols, height, width) per image: its grid and its
    original size (the ``llava-next`` layout cuts the padding off by it). In the ``llava-next`` layout the tiles are
    cut as transformers' ``LlavaNextImageProcessor`` cuts them (canvas padded in black, the base processor's
    resampling), so an exported model's processor gives the same pixels; ``tiles`` keeps the first scitune cut.
    """

    def __init__(self, base: Any, rule: ImageTokenRule):
        self.base, self.rule = base, rule
        if rule.layout == "llava-next":
            self.fill = (0, 0, 0)
            self.resample = int(getattr(base, "resample", None) or Image.Resampling.BICUBIC)
        else:
            mean = getattr(base, "image_mean", None) or [0.0, 0.0, 0.0]
            # padding in the mean colour is zero after normalisation, so it reads as "no content" to the encoder
            self.fill = tuple(int(round(255 * m)) for m in mean[:3])
            self.resample = int(Image.Resampling.BICUBIC)

    def __call__(self, images: Image.Image | Sequence[Image.Image], return_tensors: str = "pt", **kwargs: Any):
        if return_tensors != "pt":
            raise ValueError("AnyResImageProcessor returns torch tensors only (return_tensors='pt')")
        images = [images] if isinstance(images, Image.Image) else list(images)
        grids = [self.rule.grid(im.size) for im in images]
        tile = self.rule.tile_size
        tiles = [t for im, g in zip(images, grids) for t in split_tiles(im, g, tile, self.fill, self.resample)]
        pix = self.base(images=tiles, return_tensors="pt", **kwargs)["pixel_values"]  # (sum tiles, C, S, S)
        layout = [(*g, im.height, im.width) for im, g in zip(images, grids)]
        return {"pixel_values": pix, "image_grids": torch.tensor(layout, dtype=torch.long).reshape(-1, 4)}

    def save_pretrained(self, path: Any, **kwargs: Any) -> Any:
        """Saves the base processor (the grids live in ``processor.json``)."""
        return self.base.save_pretrained(path, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.base.to_dict(),
            "anyres_grids": [format_grid(g) for g in self.rule.grids],
            "anyres_tile": self.rule.tile_size,
            "anyres_layout": self.rule.layout,
        }

    def __getattr__(self, name: str) -> Any:
        if name == "base" or name.startswith("__"):  # not set yet (unpickling): no recursion into the base
            raise AttributeError(name)
        return getattr(self.base, name)


def prepare_tokenizer(tokenizer: Any, image_token: str = DEFAULT_IMAGE_TOKEN, start_end: bool = False) -> Any:
    """Add the image token (and ``<im_start>``/``<im_end>``) as special tokens and pick a pad token if missing."""
    wanted = [image_token] + ([IM_START, IM_END] if start_end else [])
    vocab = tokenizer.get_vocab()
    missing = [t for t in wanted if t not in vocab]
    if missing:  # special (never split, skipped when decoding), without replacing the tokenizer's own extra specials
        from tokenizers import AddedToken

        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    return tokenizer


class Processor:
    """Messages + images -> token ids, labels and pixel inputs, the same way for every command.

    Args:
        tokenizer: a HF tokenizer (the image token, and ``<im_start>``/``<im_end>`` with ``rule.start_end``, are
            added as special tokens when missing).
        image_processor: the vision encoder's HF image processor (wrapped for AnyRes tiling when the rule has grids).
        template: a chat template registry key (`scitune ls templates`).
        rule: how many tokens an image becomes.
        image_token: the placeholder string that marks an image in the text (expanded to ``rule.count`` copies).
        image_aspect: ``resize`` (the image processor's own resize/crop) or ``pad``: first pad the image to a square
            in the image processor's mean colour, centred, as LLaVA-1.5's ``expand2square`` (``image_aspect_ratio:
            pad``), so nothing is cropped away. AnyRes tiles images its own way (``pad`` is refused with grids).
    """

    def __init__(
        self,
        tokenizer: Any,
        image_processor: Any,
        template: str,
        rule: ImageTokenRule,
        image_token: str = DEFAULT_IMAGE_TOKEN,
        image_aspect: str = "resize",
    ):
        if image_aspect not in IMAGE_ASPECTS:
            raise ValueError(f"image aspect must be one of {IMAGE_ASPECTS}, got {image_aspect!r}")
        if image_aspect == "pad" and rule.grids:
            raise ValueError("image aspect 'pad' pads each image to one square; AnyRes (grids) tiles it instead")
        self.image_aspect = image_aspect
        self.tokenizer = prepare_tokenizer(tokenizer, image_token, rule.start_end)
        base = image_processor.base if isinstance(image_processor, AnyResImageProcessor) else image_processor
        self.image_processor = AnyResImageProcessor(base, rule) if rule.grids else base
        self.template_name = template
        self.template: ChatTemplate = get_template(template)
        self.template.placeholder = image_token
        self.rule = rule
        self.image_token = image_token
        self.image_token_id = int(self.tokenizer.convert_tokens_to_ids(image_token))
        ids = [int(self.tokenizer.convert_tokens_to_ids(t)) for t in (IM_START, IM_END)] if rule.start_end else []
        # the one place where the text side of the image-token rule is put together
        self.slots = ImageSlots(
            image_token,
            self.image_token_id,
            rule.tokens_per_tile,
            rule.count if rule.grids else None,
            before=tuple(ids[:1]),
            after=tuple(ids[1:]),
        )

    # ---- text
    def image_tokens(self, size: tuple[int, int] | None = None) -> int:
        """Tokens an image of ``size`` = (width, height) takes in the text, ``<im_start>``/``<im_end>`` included."""
        return self.rule.count(size) + (2 if self.rule.start_end else 0)

    def encode(
        self, messages: list[Message], sizes: Sequence[tuple[int, int]] | None = None, prompt: bool = False
    ) -> Encoded:
        """Token ids and labels of a conversation whose images have these (width, height) ``sizes``, in order.

        ``sizes`` None: the images are not at hand (a fixed image-token count; AnyRes needs the sizes); otherwise
        there must be one size per image placeholder. ``prompt``: the messages end with a user turn and the
        template's assistant prefix is appended (generation); otherwise every assistant turn is labelled (training).
        """
        slots = self.slots if sizes is None else self.slots.for_images(list(sizes))
        segments = (self.template.render_prompt if prompt else self.template.render)(messages, self.tokenizer)
        enc = encode_segments(segments, self.tokenizer, slots, self.template.add_bos)
        if sizes is not None and enc.n_images != len(sizes):
            raise ValueError(f"{enc.n_images} {self.image_token} placeholder(s) but {len(sizes)} image(s)")
        return enc

    def stop_strings(self) -> list[str]:
        """Strings that end a reply (the template's own)."""
        return [s for s in self.template.stop(self.tokenizer) if s]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    @property
    def base_image_processor(self) -> Any:
        """The encoder's own HF image processor (without the AnyRes tiling around it)."""
        ip = self.image_processor
        return ip.base if isinstance(ip, AnyResImageProcessor) else ip

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    # ---- images
    def images(self, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        """``pixel_values`` (and with AnyRes ``image_grids``) of a sample's images, in order."""
        images = list(images)
        if self.image_aspect == "pad":
            fill = tuple(int(m * 255) for m in (getattr(self.base_image_processor, "image_mean", None) or (0, 0, 0)))
            images = [expand_to_square(im, fill) for im in images]
        out = self.image_processor(images=images, return_tensors="pt")
        return {k: out[k] for k in ("pixel_values", "image_grids") if k in out}

    def __call__(
        self, messages: list[Message], images: Sequence[Image.Image] = (), prompt: bool = True
    ) -> dict[str, Any]:
        """One sample's model inputs: ``input_ids`` (and ``labels`` when not ``prompt``), pixel inputs if any."""
        enc = self.encode(messages, [im.size for im in images], prompt)
        item: dict[str, Any] = {"input_ids": torch.tensor(enc.input_ids), "pixel_values": None}
        if not prompt:
            item["labels"] = torch.tensor(enc.labels)
        if images:
            item.update(self.images(images))
        return item

    # ---- persistence
    def config(self) -> dict[str, Any]:
        from scitune import __version__

        return {
            "format": FORMAT_VERSION,
            "scitune_version": __version__,
            "template": self.template_name,
            "image_token": self.image_token,
            "image_token_id": self.image_token_id,
            "rule": self.rule.to_dict(),
            "image_aspect": self.image_aspect,
        }

    def replace(self, **changes: Any) -> Processor:
        """A copy with some of the constructor's arguments changed (tokenizer and image processor shared)."""
        args = {
            "tokenizer": self.tokenizer,
            "image_processor": self.image_processor,
            "template": self.template_name,
            "rule": self.rule,
            "image_token": self.image_token,
            "image_aspect": self.image_aspect,
        }
        return Processor(**{**args, **changes})

    def save_pretrained(self, folder: str | os.PathLike[str]) -> None:
        """``tokenizer/`` and ``image_processor/`` (AutoTokenizer / AutoImageProcessor read them) and processor.json."""
        folder = Path(folder)
        self.tokenizer.save_pretrained(folder / "tokenizer")
        self.image_processor.save_pretrained(folder / "image_processor")
        write_json(folder / PROCESSOR_FILE, self.config())

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike[str], template: str | None = None, rule: ImageTokenRule | None = None
    ) -> Processor:
        """The processor saved in ``folder``.

        A checkpoint written before processor.json existed has only its ``tokenizer/`` and ``image_processor/``:
        then ``template`` and ``rule`` (from its scitune.json and its model) must be given.
        """
        from transformers import AutoImageProcessor, AutoTokenizer

        folder = Path(folder)
        cfg: dict[str, Any] = {}
        if (folder / PROCESSOR_FILE).is_file():
            cfg = json.loads((folder / PROCESSOR_FILE).read_text(encoding="utf-8"))
        elif template is None or rule is None:
            raise FileNotFoundError(2, f"no {PROCESSOR_FILE} (not a scitune checkpoint?)", str(folder))
        tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
        image_processor = AutoImageProcessor.from_pretrained(folder / "image_processor")
        return cls(
            tokenizer,
            image_processor,
            cfg.get("template", template),
            ImageTokenRule.from_dict(cfg["rule"]) if "rule" in cfg else rule,
            cfg.get("image_token", DEFAULT_IMAGE_TOKEN),
            cfg.get("image_aspect", "resize"),
        )
