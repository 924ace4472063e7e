"""Zero-shot figure-type classification with a CLIP model: the type whose prompt is most similar to the image wins.

This is the vision-encoder-only baseline of SciTune's figure-type table; it works for any CLIP-like checkpoint
folder (``CLIPModel.from_pretrained``: OpenAI CLIP, the demo's micro CLIP, ...).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from scitune.eval.figure_type import FIGURE_TYPES

__all__ = ["load_clip_parts", "type_similarities", "zero_shot_figure_types"]

ImageLike = Image.Image | str | os.PathLike


def load_clip_parts(clip: Any, processor: Any = None) -> tuple[Any, Any, Any]:
    """``(CLIPModel, tokenizer, image_processor)`` from a folder, or from a loaded model and its processor.

    Args:
        clip: a CLIP checkpoint folder (or hub id), or a loaded ``CLIPModel``.
        processor: with a loaded model: a ``CLIPProcessor`` (anything with ``.tokenizer`` and
            ``.image_processor``) or a ``(tokenizer, image_processor)`` pair; ignored for a folder.
    """
    if isinstance(clip, str | os.PathLike):
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        path = str(Path(clip)) if Path(clip).exists() else str(clip)
        model = CLIPModel.from_pretrained(path).eval()
        return model, AutoTokenizer.from_pretrained(path), AutoImageProcessor.from_pretrained(path)
    if processor is None:
        raise ValueError("a loaded CLIP model needs its processor: pass processor=CLIPProcessor or (tok, image_proc)")
    if isinstance(processor, tuple | list):
        tokenizer, image_processor = processor
    else:
        tokenizer, image_processor = processor.tokenizer, processor.image_processor
    return clip, tokenizer, image_processor


def _open(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    from scitune.images import open_image

    return open_image(image)


@torch.no_grad()
def type_similarities(
    clip: Any,
    images: Sequence[ImageLike],
    type_names: Sequence[str] = FIGURE_TYPES,
    prompt: str = "a {}",
    processor: Any = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """Cosine similarity (times the model's logit scale) of each image to each type prompt, shape (N, T).

    Args:
        clip: a CLIP folder or loaded ``CLIPModel`` (see `load_clip_parts`).
        images: PIL images or image paths.
        type_names: the candidate types.
        prompt: text template with one ``{}`` for the type name, e.g. ``"a {}"`` or ``"a {} from a paper"``.
        processor: the processor of a loaded model (see `load_clip_parts`).
        batch_size: images per forward pass.
    """
    if "{}" not in prompt:
        raise ValueError(f"prompt {prompt!r} needs a '{{}}' where the type name goes")
    if not type_names:
        raise ValueError("type_names is empty")
    model, tokenizer, image_processor = load_clip_parts(clip, processor)
    device = next(model.parameters()).device
    text = tokenizer([prompt.format(t) for t in type_names], padding=True, return_tensors="pt").to(device)
    rows = []
    for i in range(0, len(images), batch_size):
        batch = [_open(im) for im in images[i : i + batch_size]]
        pixels = image_processor(images=batch, return_tensors="pt")["pixel_values"].to(device)
        out = model(input_ids=text["input_ids"], attention_mask=text["attention_mask"], pixel_values=pixels)
        rows.append(out.logits_per_image.float().cpu())  # (n, T)
    return torch.cat(rows) if rows else torch.zeros(0, len(type_names))


def zero_shot_figure_types(
    clip: Any,
    images: Sequence[ImageLike],
    type_names: Sequence[str] = FIGURE_TYPES,
    prompt: str = "a {}",
    processor: Any = None,
    batch_size: int = 64,
) -> list[str]:
    """The most similar type name for each image (CLIP zero-shot classification).

    Args:
        clip: a CLIP checkpoint folder (``CLIPModel.from_pretrained``), or a loaded ``CLIPModel`` with
            ``processor``.
        images: PIL images or image paths.
        type_names: the candidate types (default: the five SciCap figure types).
        prompt: text template with one ``{}`` for the type name.
        processor: a ``CLIPProcessor`` or ``(tokenizer, image_processor)`` for a loaded model.
        batch_size: images per forward pass.

    Returns:
        One name of ``type_names`` per image, in order.
    """
    sims = type_similarities(clip, images, type_names, prompt, processor, batch_size)
    return [type_names[int(i)] for i in sims.argmax(-1)]
