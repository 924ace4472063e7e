"""Build the frozen-feature cache for the align stage (`scitune data cache-features`); with AnyRes it stores every
image's overview and tiles."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from scitune.config.schema import ModelConfig
from scitune.data.conversation import record_images
from scitune.data.dataset import load_image, scan_file
from scitune.data.feature_store import FeatureStoreWriter, encoder_identity, image_key
from scitune.images import DEFAULT_MAX_PIXELS, resolve_image_path
from scitune.model.vlm import VisionLanguageModel


def model_feature_identity(model: VisionLanguageModel, processor: Any) -> dict[str, Any]:
    """The cache identity of ``model``'s vision side (with its processor's image processor)."""
    return vision_feature_identity(model.vision, processor.image_processor, model.identity.get("vision", {}))


def vision_feature_identity(vision: Any, image_processor: Any, identity: dict[str, Any]) -> dict[str, Any]:
    """The cache identity of a vision encoder, its image processor and its checkpoint identity."""
    return encoder_identity(identity, image_processor.to_dict(), vision.num_tokens, vision.hidden_size)


@torch.no_grad()
def build_feature_cache(
    loaded: Any,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    progress: bool = True,
    vision: tuple[Any, Any, dict[str, Any]] | None = None,
    allow_outside_root: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> dict[str, Any]:
    """Run the (frozen) vision encoder once per distinct image of ``data`` and store its features.

    Give a whole ``loaded`` model and processor (`scitune.loader.Loaded`), or ``loaded=None`` and
    ``vision=(encoder, image_processor, identity)`` (what `build_vision_side` returns: no LLM is loaded). With an
    AnyRes image processor each image's entry is its overview's and tiles' features, (1 + rows*cols, N, D), with its
    grid and size (`scitune.data.feature_store.FeatureStore.features`).
    """
    from tqdm.auto import tqdm

    if vision is None:
        model, proc = loaded
        vision = (model.vision, proc.image_processor, model.identity.get("vision", {}))
    encoder, processor, identity = vision
    device = next(encoder.parameters()).device
    root = Path(image_root) if image_root else Path(data).parent
    records, _ = scan_file(data)
    paths = sorted(
        {str(resolve_image_path(root, p, allow_outside_root)) for _, rec in records for p in record_images(rec)}
    )
    writer = FeatureStoreWriter(out, vision_feature_identity(encoder, processor, identity))
    encoder.eval()
    for i in tqdm(range(0, len(paths), batch_size), desc="features", disable=not progress):
        chunk = paths[i : i + batch_size]
        out = processor(images=[load_image(Path(p), max_pixels) for p in chunk], return_tensors="pt")
        feats = encoder(out["pixel_values"].to(device))  # (b, N, D); AnyRes: (tiles of the b images, N, D)
        grids = out.get("image_grids")
        if grids is None:
            for p, f in zip(chunk, feats):
                writer.add(image_key(p), f)
            continue
        at = 0
        for p, grid in zip(chunk, grids.tolist()):
            n = grid[0] * grid[1] + 1
            writer.add(image_key(p), feats[at : at + n], grid)
            at += n
    return writer.close()


def build_vision_side(cfg: ModelConfig, device: str = "cpu") -> tuple[Any, Any, dict[str, Any]]:
    """``(encoder, image_processor, identity)`` of a model config, without loading its LLM; ``device`` ``auto`` is
    cuda when available, else cpu. With ``--model.vision.anyres`` the image processor cuts tiles as the model's
    processor does (`scitune.processor.AnyResImageProcessor`)."""
    from scitune.model.anyres import parse_grids
    from scitune.model.builders import vision_identity
    from scitune.model.llm import DTYPES
    from scitune.model.vision import load_vision_encoder
    from scitune.processor import AnyResImageProcessor, ImageTokenRule

    v = cfg.vision
    encoder, processor = load_vision_encoder(
        v.name, v.path, v.feature_layer, v.select, DTYPES[cfg.llm.dtype], random_init=v.random_init
    )
    if v.anyres:  # the rule a new model of this config gets (`scitune.loader.build`)
        rule = ImageTokenRule(cfg.projector.num_tokens or encoder.num_tokens, encoder.image_size, parse_grids(v.anyres))
        processor = AnyResImageProcessor(processor, rule)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return encoder.to(device), processor, vision_identity(v)
