"""AdamW with decay/no-decay groups (and a vision-encoder lr) and the warmup + cosine/linear/constant schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from scitune.config.schema import OptimConfig


def param_groups(model: nn.Module, weight_decay: float, vision_lr: float | None = None) -> list[dict]:
    """Trainable parameters split into decayed (matrices) and not decayed (biases, norms).

    With ``vision_lr``, the vision encoder's parameters (names under ``vision.``) form their own decayed / not
    decayed groups at that peak lr, after the other groups (so group 0 keeps the main lr).
    """
    decay, no_decay, vision_decay, vision_no_decay = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if vision_lr is not None and name.startswith("vision."):
            (vision_decay if p.ndim >= 2 else vision_no_decay).append(p)
        else:
            # embeddings are not decayed: with only some rows training (`train_added_rows`) decay would move all
            (decay if p.ndim >= 2 and not getattr(p, "_scitune_row_hook", False) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if vision_decay:
        groups.append({"params": vision_decay, "weight_decay": weight_decay, "lr": vision_lr})
    if vision_no_decay:
        groups.append({"params": vision_no_decay, "weight_decay": 0.0, "lr": vision_lr})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (the vision encoder at ``cfg.vision_lr`` when set)."""
    groups = param_groups(model, cfg.weight_decay, cfg.vision_lr)
    if not any(g["params"] for g in groups):
        raise ValueError("no trainable parameters: check --train.stage and the model parts")
    kwargs = {"fused": True} if cfg.fused else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, **kwargs)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak lr at ``step`` (0-based): linear warmup, then the decay."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, cfg: OptimConfig):
    """A `LambdaLR` with ``ceil(warmup_ratio * total_steps)`` warmup steps."""
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, warmup, cfg.schedule))
