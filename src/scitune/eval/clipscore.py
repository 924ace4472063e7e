"""CLIPScore and RefCLIPScore (Hessel et al., 2021) with any CLIP-like checkpoint ``CLIPModel.from_pretrained`` reads
(OpenAI CLIP, the demo's micro CLIP, ...): reference-free image-caption similarity and its reference-aware variant."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from scitune.eval.zeroshot import load_clip_parts

__all__ = ["CLIP_PREFIX", "CLIP_WEIGHT", "clip_image_embeddings", "clip_scores", "clip_text_embeddings", "clipscores"]

CLIP_WEIGHT = 2.5
"""w of CLIP-S = w * max(cos, 0) (the paper's rescaling; raw cosines of CLIP are rarely above 0.4)."""
CLIP_PREFIX = "A photo depicts"
"""Put before every candidate and reference, as the authors' clipscore.py does."""

ImageLike = Image.Image | str | os.PathLike


def _features(out: Any) -> torch.Tensor:
    """The projected embeddings from ``get_*_features`` (a tensor in transformers 4, an output object in 5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _open(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    from scitune.images import open_image

    return open_image(image)


@torch.no_grad()
def clip_image_embeddings(clip: Any, images: Sequence[ImageLike], processor: Any = None, batch_size: int = 64):
    """L2-normalised CLIP image embeddings, shape (N, D), float32 on CPU.

    Args:
        clip: a CLIP folder or a loaded ``CLIPModel`` (with ``processor``; see `load_clip_parts`).
        images: PIL images or image paths.
        processor: the processor of a loaded model.
        batch_size: images per forward pass.
    """
    model, _, image_processor = load_clip_parts(clip, processor)
    device = next(model.parameters()).device
    parts = []
    for i in range(0, len(images), batch_size):
        pixels = image_processor(images=[_open(im) for im in images[i : i + batch_size]], return_tensors="pt")
        parts.append(_features(model.get_image_features(pixel_values=pixels["pixel_values"].to(device))).float())
    emb = torch.cat(parts).cpu() if parts else torch.zeros(0, model.config.projection_dim)
    return torch.nn.functional.normalize(emb, dim=-1)


@torch.no_grad()
def clip_text_embeddings(
    clip: Any, texts: Sequence[str], processor: Any = None, prefix: str = CLIP_PREFIX, batch_size: int = 64
):
    """L2-normalised CLIP text embeddings of ``prefix + " " + text``, shape (N, D), float32 on CPU; texts longer
    than the text encoder's positions are truncated (as ``clip.tokenize(..., truncate=True)`` does)."""
    model, tokenizer, _ = load_clip_parts(clip, processor)
    device = next(model.parameters()).device
    longest = int(model.config.text_config.max_position_embeddings)
    full = [f"{prefix} {t}" if prefix else t for t in texts]
    parts = []
    for i in range(0, len(full), batch_size):
        enc = tokenizer(
            full[i : i + batch_size], padding=True, truncation=True, max_length=longest, return_tensors="pt"
        )
        out = model.get_text_features(
            input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device)
        )
        parts.append(_features(out).float())
    emb = torch.cat(parts).cpu() if parts else torch.zeros(0, model.config.projection_dim)
    return torch.nn.functional.normalize(emb, dim=-1)


def clipscores(
    image_emb: torch.Tensor,
    cand_emb: torch.Tensor,
    ref_embs: Sequence[torch.Tensor] | None = None,
    w: float = CLIP_WEIGHT,
) -> dict[str, list[float] | None]:
    """Per-item scores from normalised embeddings (Hessel et al., 2021, eqs. 1 and 2).

    CLIP-S(c, v) = w * max(cos(c, v), 0); RefCLIP-S(c, R, v) = harmonic mean of CLIP-S(c, v) and
    max(max_{r in R} cos(c, r), 0) (0 when either is 0).

    Args:
        image_emb: (N, D) image embeddings.
        cand_emb: (N, D) candidate caption embeddings.
        ref_embs: per item, its (R_i, D) reference embeddings; None: no RefCLIP-S.
        w: the rescaling weight.

    Returns:
        ``{"clipscore": [N floats], "refclipscore": [N floats] or None}``.
    """
    if image_emb.shape != cand_emb.shape:
        raise ValueError(f"{tuple(image_emb.shape)} image embeddings but {tuple(cand_emb.shape)} caption embeddings")
    clip_s = w * (image_emb * cand_emb).sum(-1).clamp(min=0)  # (N,)
    ref_s = None
    if ref_embs is not None:
        if len(ref_embs) != len(cand_emb):
            raise ValueError(f"{len(ref_embs)} reference sets for {len(cand_emb)} candidates")
        if any(len(r) == 0 for r in ref_embs):
            raise ValueError("every candidate needs at least one reference for RefCLIPScore")
        # best reference similarity per candidate, (N,)
        best = torch.tensor([float((r @ c).max().clamp(min=0)) for r, c in zip(ref_embs, cand_emb)])
        denom = clip_s + best
        ref_s = torch.where(denom > 0, 2 * clip_s * best / denom.clamp(min=1e-12), torch.zeros_like(denom))
    return {"clipscore": clip_s.tolist(), "refclipscore": None if ref_s is None else ref_s.tolist()}


def clip_scores(
    clip: Any,
    images: Sequence[ImageLike],
    candidates: Sequence[str],
    references: Sequence[Sequence[str]] | None = None,
    processor: Any = None,
    w: float = CLIP_WEIGHT,
    prefix: str = CLIP_PREFIX,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Corpus CLIPScore (and RefCLIPScore with references): the mean of the per-item scores.

    Args:
        clip: a CLIP-like checkpoint folder (``CLIPModel.from_pretrained`` + its tokenizer and image processor), or
            a loaded ``CLIPModel`` with ``processor``.
        images: one image (PIL or path) per candidate.
        candidates: the generated captions.
        references: the reference captions of each item; None: CLIPScore only.
        processor: the processor of a loaded model (``CLIPProcessor`` or ``(tokenizer, image_processor)``).
        w: the rescaling weight (2.5 in the paper).
        prefix: text put before every caption ("A photo depicts" as the authors' code; "" for none).
        batch_size: items per forward pass.

    Returns:
        ``{"clipscore", "refclipscore", "per_item": {"clipscore": [...], "refclipscore": [...]}, "count", "w",
        "prefix"}`` with raw scores (CLIP-S in [0, w]; papers print them x100); means are None for no items and
        refclipscore is None without references.
    """
    if len(images) != len(candidates):
        raise ValueError(f"{len(images)} images but {len(candidates)} candidate captions")
    if references is not None and len(references) != len(candidates):
        raise ValueError(f"{len(references)} reference lists but {len(candidates)} candidate captions")
    parts = load_clip_parts(clip, processor)
    model, pair = parts[0], parts[1:]
    img = clip_image_embeddings(model, images, pair, batch_size)
    cand = clip_text_embeddings(model, candidates, pair, prefix, batch_size)
    refs = None
    if references is not None:
        flat = [r for refs_i in references for r in refs_i]
        emb = clip_text_embeddings(model, flat, pair, prefix, batch_size)
        refs, at = [], 0
        for refs_i in references:
            refs.append(emb[at : at + len(refs_i)])
            at += len(refs_i)
    per = clipscores(img, cand, refs, w)

    def mean(xs: list[float] | None) -> float | None:
        return sum(xs) / len(xs) if xs else None

    return {
        "clipscore": mean(per["clipscore"]),
        "refclipscore": mean(per["refclipscore"]),
        "per_item": per,
        "count": len(candidates),
        "w": w,
        "prefix": prefix,
    }
