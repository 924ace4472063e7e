"""Build the frozen-feature cache for the align stage (`scitune data cache-features`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from scitune.data.conversation import record_images
from scitune.data.dataset import load_image, scan_file
from scitune.data.feature_store import FeatureStoreWriter, encoder_identity, image_key
from scitune.model.vlm import VisionLanguageModel


def model_feature_identity(model: VisionLanguageModel) -> dict[str, Any]:
    """The cache identity of ``model``'s vision side."""
    return encoder_identity(
        model.identity.get("vision", {}),
        model.image_processor.to_dict(),
        model.vision.num_tokens,
        model.vision.hidden_size,
    )


@torch.no_grad()
def build_feature_cache(
    model: VisionLanguageModel,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the (frozen) vision encoder once per distinct image of ``data`` and store its features."""
    from tqdm.auto import tqdm

    root = Path(image_root) if image_root else Path(data).parent
    records, _ = scan_file(data)
    paths = sorted({str(root / p) for _, rec in records for p in record_images(rec)})
    writer = FeatureStoreWriter(out, model_feature_identity(model))
    model.eval()
    for i in tqdm(range(0, len(paths), batch_size), desc="features", disable=not progress):
        chunk = paths[i : i + batch_size]
        pix = model.image_processor(images=[load_image(Path(p)) for p in chunk], return_tensors="pt")["pixel_values"]
        feats = model.vision(pix.to(model.device))  # (b, N, D)
        for p, f in zip(chunk, feats):
            writer.add(image_key(p), f)
    return writer.close()
