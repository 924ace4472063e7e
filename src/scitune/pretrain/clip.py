"""Contrastive pretraining of a micro CLIP (a real ``CLIPModel`` from a small ``CLIPConfig``) on image-text pairs."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scitune.pretrain.common import decay_groups, save_folder, train_epochs
from scitune.pretrain.tokenizer import with_eos

log = logging.getLogger(__name__)


@dataclass
class ClipPretrainConfig:
    """Size and schedule of the micro CLIP."""

    image_size: int = 64
    """Side of the square input image, in pixels."""
    patch_size: int = 16
    """ViT patch side: (image_size / patch_size)^2 patch tokens per image."""
    vision_hidden: int = 96
    """Width of the vision transformer."""
    vision_layers: int = 3
    """Blocks of the vision transformer."""
    vision_heads: int = 4
    """Attention heads of the vision transformer."""
    text_hidden: int = 64
    """Width of the text transformer."""
    text_layers: int = 1
    """Blocks of the text transformer."""
    text_heads: int = 2
    """Attention heads of the text transformer."""
    projection_dim: int = 64
    """Size of the joint image-text embedding."""
    max_text_tokens: int = 48
    """Longest text (tokens, EOS included); longer texts are cut."""
    batch_size: int = 64
    """Pairs per step (each pair's negatives are the other pairs of the batch)."""
    epochs: float = 20.0
    """Passes over the pairs."""
    lr: float = 2e-3
    """Peak AdamW learning rate (linear warmup over the first 10% of steps, then cosine)."""
    weight_decay: float = 0.05
    """AdamW weight decay on matrices."""
    seed: int = 0
    """Seed of the initialisation and the batch order."""


def build_clip(cfg: ClipPretrainConfig, vocab_size: int, bos: int, eos: int, pad: int) -> Any:
    """A randomly initialised ``CLIPModel`` of the configured size for a tokenizer with these ids."""
    from transformers import CLIPConfig, CLIPModel

    text = {"vocab_size": vocab_size, "hidden_size": cfg.text_hidden, "intermediate_size": 4 * cfg.text_hidden,
            "num_hidden_layers": cfg.text_layers, "num_attention_heads": cfg.text_heads,
            "max_position_embeddings": cfg.max_text_tokens, "bos_token_id": bos, "eos_token_id": eos,
            "pad_token_id": pad, "projection_dim": cfg.projection_dim}  # fmt: skip
    vision = {"hidden_size": cfg.vision_hidden, "intermediate_size": 4 * cfg.vision_hidden,
              "num_hidden_layers": cfg.vision_layers, "num_attention_heads": cfg.vision_heads,
              "image_size": cfg.image_size, "patch_size": cfg.patch_size, "projection_dim": cfg.projection_dim}  # fmt: skip
    torch.manual_seed(cfg.seed)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=cfg.projection_dim))


def image_processor(image_size: int) -> Any:
    """The ``CLIPImageProcessor`` of a micro CLIP: resize and center-crop to ``image_size``, CLIP's mean/std."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})


def pretrain_clip(
    images: list[Any],
    texts: list[str],
    tokenizer: Any,
    cfg: ClipPretrainConfig,
    out_dir: str | os.PathLike[str],
    progress: bool = True,
) -> dict[str, Any]:
    """Train a micro CLIP with the symmetric InfoNCE loss and save it as a Hugging Face folder.

    The folder holds the ``CLIPModel`` (``config.json`` + safetensors), its ``CLIPImageProcessor`` and the
    tokenizer (appending ``</s>``, where the text tower pools), so ``CLIPModel.from_pretrained``,
    ``CLIPVisionModel.from_pretrained``, ``AutoImageProcessor`` and ``AutoTokenizer`` all read it.

    Args:
        images: PIL images, paired with ``texts`` by position.
        texts: one text per image (e.g. its caption).
        tokenizer: a tokenizer from `train_bpe_tokenizer`.
        cfg: sizes and schedule.
        out_dir: the folder to write (replaced atomically).
        progress: show a progress bar.

    Returns:
        ``{"steps", "losses", "seconds", "parameters", "train_retrieval_acc"}``.
    """
    if len(images) != len(texts) or not images:
        raise ValueError(f"{len(images)} images and {len(texts)} texts: need equal, non-zero counts")
    tok = with_eos(tokenizer)
    proc = image_processor(cfg.image_size)
    pixels = proc(images=images, return_tensors="pt")["pixel_values"]  # (N, 3, S, S)
    ids, mask = encode_texts(tok, texts, cfg.max_text_tokens)
    model = build_clip(cfg, len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    opt = torch.optim.AdamW(decay_groups(model, cfg.weight_decay, "embedding"), lr=cfg.lr, betas=(0.9, 0.98))
    bs = min(cfg.batch_size, len(texts))
    t0 = time.perf_counter()

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        return model(input_ids=ids[idx], attention_mask=mask[idx], pixel_values=pixels[idx], return_loss=True).loss

    def clamp_scale() -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))

    losses = train_epochs(model, opt, len(texts), bs, cfg.epochs, cfg.lr, cfg.seed, loss_fn, "pretrain CLIP",
                          progress, clamp_scale)  # fmt: skip
    total = len(losses)
    acc = _retrieval_acc(model, ids, mask, pixels, bs)
    save_folder(out_dir, lambda tmp: (model.save_pretrained(tmp), proc.save_pretrained(tmp), tok.save_pretrained(tmp)))
    params = sum(p.numel() for p in model.parameters())
    log.info("micro CLIP: %d steps, loss %.3f -> %.3f, %s params", total, losses[0], losses[-1], f"{params:,}")
    return {"steps": total, "losses": losses, "seconds": round(time.perf_counter() - t0, 1), "parameters": params,
            "train_retrieval_acc": acc}  # fmt: skip


@torch.no_grad()
def _retrieval_acc(model: Any, ids: torch.Tensor, mask: torch.Tensor, pixels: torch.Tensor, bs: int) -> float:
    """Image-to-text top-1 accuracy within batches of ``bs`` pairs (what the loss optimises)."""
    hits = total = 0
    for i in range(0, len(ids) - bs + 1, bs):
        out = model(input_ids=ids[i : i + bs], attention_mask=mask[i : i + bs], pixel_values=pixels[i : i + bs])
        hits += int((out.logits_per_image.argmax(-1) == torch.arange(bs)).sum())
        total += bs
    return hits / total if total else float("nan")


def encode_texts(tok: Any, texts: list[str], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, padded; a text cut at ``max_tokens`` still ends with EOS (where CLIP pools)."""
    enc = tok(texts, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    ids[:, -1] = torch.where(mask[:, -1].bool(), tok.eos_token_id, ids[:, -1])
    return ids, mask


@torch.no_grad()
def retrieval_accuracy(clip_dir: str | os.PathLike[str], images: list[Any], texts: list[str]) -> float:
    """Image-to-text top-1 accuracy of a saved CLIP among all ``texts`` (e.g. held-out figures and captions)."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    p = Path(clip_dir)
    model, tok, proc = (
        CLIPModel.from_pretrained(p).eval(),
        AutoTokenizer.from_pretrained(p),
        AutoImageProcessor.from_pretrained(p),
    )
    ids, mask = encode_texts(tok, texts, model.config.text_config.max_position_embeddings)
    pixels = proc(images=images, return_tensors="pt")["pixel_values"]
    return _retrieval_acc(model, ids, mask, pixels, len(texts))
