"""Padding collator: right padding for training, left padding for generation."""

from __future__ import annotations

from typing import Any

import torch

from scitune.data.tokenize import IGNORE_INDEX


def collate(batch: list[dict[str, Any]], pad_id: int, padding_side: str = "right") -> dict[str, Any]:
    """Pad ``input_ids``/``labels`` to the longest sample, build ``attention_mask``, stack images in order.

    Images of all samples are concatenated in sample order into ``pixel_values`` (n_images, C, H, W), matching
    the order of image-token runs in the flattened batch. AnyRes samples bring their tiles in ``pixel_values``
    (n_tiles, C, H, W) and their grids in ``image_grids`` (n_images, 4: rows, cols, height, width), concatenated the
    same way.
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
    out: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
    for key in ("pixel_values", "image_features", "image_grids"):
        parts = [b[key] for b in batch if b.get(key) is not None]
        out[key] = torch.cat(parts) if parts else None
    if labels is not None:
        out["labels"] = labels
    return out


def pack_rows(lengths: list[int], max_length: int) -> list[list[int]]:
    """Group sample indices into rows of at most ``max_length`` tokens (first fit, longest first).

    A sample is never split across rows; a sample longer than ``max_length`` gets a row of its own.
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: -lengths[k]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(max_length - lengths[i])
    return rows


def collate_packed(batch: list[dict[str, Any]], pad_id: int, max_length: int) -> dict[str, Any]:
    """Pack samples into few rows: position ids restart at 0 for each sample and ``attention_mask`` is None.

    transformers reads restarting ``position_ids`` with no attention mask as packed sequences and builds a
    block-diagonal causal mask (SDPA/eager) or varlen attention (FlashAttention-2), so samples never attend to each
    other. The trailing padding of a row is its own sequence with ignored labels.
    """
    rows = pack_rows([len(b["input_ids"]) for b in batch], max_length)
    width = max(sum(len(batch[i]["input_ids"]) for i in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    order: list[int] = []
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            n = len(batch[i]["input_ids"])
            ids[r, at : at + n] = batch[i]["input_ids"]
            labels[r, at : at + n] = batch[i]["labels"]
            pos[r, at : at + n] = torch.arange(n)
            at += n
        pos[r, at:] = torch.arange(width - at)
        order += row
    out: dict[str, Any] = {"input_ids": ids, "labels": labels, "position_ids": pos, "attention_mask": None}
    for key in (
        "pixel_values",
        "image_features",
        "image_grids",
    ):  # images follow the order of their token runs in the rows
        parts = [batch[i][key] for i in order if batch[i].get(key) is not None]
        out[key] = torch.cat(parts) if parts else None
    return out
