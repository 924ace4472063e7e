"""Padding collator: right padding for training, left padding for generation."""

from __future__ import annotations

from typing import Any

import torch

from scitune.data.tokenize import IGNORE_INDEX


def collate(batch: list[dict[str, Any]], pad_id: int, padding_side: str = "right") -> dict[str, Any]:
    """Pad ``input_ids``/``labels`` to the longest sample, build ``attention_mask``, stack images in order.

    Images of all samples are concatenated in sample order into ``pixel_values`` (n_images, C, H, W), matching
    the order of image-token runs in the flattened batch.
    """
    longest = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), longest), dtype=torch.long)
    has_labels = "labels" in batch[0]
    labels = torch.full((len(batch), longest), IGNORE_INDEX, dtype=torch.long) if has_labels else None
    for i, b in enumerate(batch):
        n = len(b["input_ids"])
        sl = slice(0, n) if padding_side == "right" else slice(longest - n, longest)
        ids[i, sl] = b["input_ids"]
        mask[i, sl] = 1
        if labels is not None:
            labels[i, sl] = b["labels"]
    pix = [b["pixel_values"] for b in batch if b.get("pixel_values") is not None]
    out: dict[str, Any] = {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": torch.cat(pix) if pix else None,
    }
    if labels is not None:
        out["labels"] = labels
    return out
