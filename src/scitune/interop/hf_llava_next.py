"""Export to / import from transformers' `LlavaNextForConditionalGeneration` (AnyRes models, llava-next layout):
scitune's ROWSxCOLS grids become ``image_grid_pinpoints`` of [rows * S, cols * S] pixels, the connector's
``image_newline`` becomes the model's."""

from __future__ import annotations

import os
from typing import Any

import torch

from scitune.interop.hf_llava import (
    check_exportable,
    hf_parts,
    llava_config_args,
    load_hf_weights,
    load_projector,
    resolve_template,
    with_image_token,
)
from scitune.loader import Loaded
from scitune.model.anyres import format_grid, grid_pinpoints, grids_from_pinpoints
from scitune.model.vlm import VisionLanguageModel
from scitune.processor import ImageTokenRule

_BASE_KEYS = (
    "do_resize",
    "size",
    "resample",
    "do_center_crop",
    "crop_size",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_convert_rgb",
)
"""Image-processor settings that the llava-next processor shares with the encoder's own (per tile)."""


def _check(model: VisionLanguageModel) -> None:
    if not model.anyres_grids:
        raise ValueError("LlavaNextForConditionalGeneration is for AnyRes models (--model.vision.anyres)")
    if model.anyres_layout != "llava-next":
        raise ValueError(
            f"this AnyRes model uses the {model.anyres_layout!r} layout (a checkpoint from before llava-next); "
            "LlavaNextForConditionalGeneration needs the llava-next layout: retrain it to export"
        )
    if model.vision.select != "patch":
        raise ValueError("LlavaNextForConditionalGeneration needs --model.vision.select patch (square feature maps)")
    check_exportable(model)
    side = model.vision.image_size // int(model.vision.model.config.patch_size)
    if side * side != model.num_image_tokens:
        raise ValueError(f"a tile gives {model.num_image_tokens} features, not the {side}x{side} map LlavaNext expects")


def hf_llava_next_config(model: VisionLanguageModel):
    """A `LlavaNextConfig` describing ``model``: the connector's activation is its export form's
    (`scitune.interop.connector`), each grid (rows, cols) the pinpoint [rows * S, cols * S] (height, width in pixels,
    S the tile)."""
    from transformers import LlavaNextConfig

    _check(model)
    grids = grid_pinpoints(model.anyres_grids, model.vision.image_size)
    return with_image_token(LlavaNextConfig(**llava_config_args(model), image_grid_pinpoints=grids), model)


def to_hf_llava_next(model: VisionLanguageModel):
    """Build a `LlavaNextForConditionalGeneration` with exactly ``model``'s weights (LoRA merged)."""
    from transformers import LlavaNextForConditionalGeneration

    hf = LlavaNextForConditionalGeneration(hf_llava_next_config(model))
    with torch.no_grad():
        hf.model.image_newline.copy_(model.image_newline)
    return load_hf_weights(hf, model)


def _next_image_processor_class(base: Any):
    import transformers

    # the same backend as the encoder's own processor, so that both make the same pixels
    pil = type(base).__name__.endswith("Pil") and hasattr(transformers, "LlavaNextImageProcessorPil")
    return transformers.LlavaNextImageProcessorPil if pil else transformers.LlavaNextImageProcessor


def hf_next_image_processor(base: Any, rule: ImageTokenRule):
    """A ``LlavaNextImageProcessor`` that tiles as scitune's processor with the encoder's image processor ``base``
    and the AnyRes ``rule`` does: the rule's grids as pinpoints, ``base``'s per-tile settings."""
    d = base.to_dict()
    settings = {k: d[k] for k in _BASE_KEYS if d.get(k) is not None}
    pinpoints = grid_pinpoints(rule.grids, rule.tile_size)
    return _next_image_processor_class(base)(**settings, image_grid_pinpoints=pinpoints, do_pad=True)


def hf_pad_image_processor(base: Any):
    """A ``LlavaImageProcessor`` with ``do_pad``: ``base``'s settings after padding each image to a square in its mean
    colour, as scitune's ``image_aspect: pad`` (and LLaVA-1.5's ``expand2square``) does."""
    import transformers

    d = base.to_dict()
    settings = {k: d[k] for k in _BASE_KEYS if d.get(k) is not None}
    pil = type(base).__name__.endswith("Pil") and hasattr(transformers, "LlavaImageProcessorPil")
    cls = transformers.LlavaImageProcessorPil if pil else transformers.LlavaImageProcessor
    return cls(**settings, do_pad=True)


def _base_image_processor(next_processor: Any, vision_type: str):
    """The encoder's own processor (one tile) with the llava-next processor's settings."""
    import transformers

    d = next_processor.to_dict()
    settings = {k: d[k] for k in _BASE_KEYS if d.get(k) is not None}
    name = "SiglipImageProcessor" if vision_type == "siglip_vision_model" else "CLIPImageProcessor"
    if type(next_processor).__name__.endswith("Pil") and hasattr(transformers, name + "Pil"):
        name += "Pil"
    return getattr(transformers, name)(**settings)


def import_hf_next(folder: str | os.PathLike[str], template: str | None = None) -> Loaded:
    """Read a `LlavaNextForConditionalGeneration` folder into an AnyRes model (llava-next layout) and its processor."""
    from transformers import AutoProcessor, LlavaNextConfig, LlavaNextForConditionalGeneration

    from scitune.model.builders import assemble

    cfg = LlavaNextConfig.from_pretrained(folder)
    hf = LlavaNextForConditionalGeneration.from_pretrained(folder)
    proc = AutoProcessor.from_pretrained(folder)
    tile = int(cfg.vision_config.image_size)
    try:
        grids = grids_from_pinpoints(cfg.image_grid_pinpoints, tile)
        side = tile // int(cfg.vision_config.patch_size)
        base = _base_image_processor(proc.image_processor, cfg.vision_config.model_type)
        rule = ImageTokenRule(side * side, tile, grids)
        parts = hf_parts(hf, cfg, resolve_template(folder, template, proc), proc, base, rule)
    except ValueError as e:
        raise ValueError(f"{folder}: {e}") from None
    vision, llm, name, identity, processor = parts
    anyres = [format_grid(g) for g in grids]
    model = assemble(vision, llm, name, identity, processor.image_token_id, len(processor.tokenizer), anyres=anyres)
    load_projector(model, hf)
    with torch.no_grad():
        model.image_newline.copy_(hf.model.image_newline)
    return Loaded(model.eval(), processor)
