"""AdamW with decay/no-decay groups (and a vision-encoder lr) and the warmup + cosine/linear/constant schedule
(transformers' schedules)."""

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


HF_SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}
"""``--optim.schedule`` -> the name `transformers.get_scheduler` knows it by (the warmup, if any, precedes each)."""


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """``ceil(warmup_ratio * total_steps)``: the steps whose lr rises linearly from 0."""
    return math.ceil(warmup_ratio * total_steps)


def schedule_for(
    optimizer: torch.optim.Optimizer, schedule: str, warmup: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """``transformers.get_scheduler`` for one of scitune's schedule names.

    The lr rises linearly from 0 at step 0 to the peak at step ``warmup``, as in HF Trainer, then decays to 0 at
    ``total_steps`` (cosine, linear) or stays (constant). The result is a `LambdaLR` whose lambdas are
    ``functools.partial`` objects over plain numbers: its state (step count, last lrs) saves as JSON and loads back
    (`scitune.train.state`).
    """
    from transformers import get_scheduler

    if schedule not in HF_SCHEDULES:
        raise ValueError(f"--optim.schedule: unknown schedule {schedule!r}; known: {', '.join(HF_SCHEDULES)}")
    return get_scheduler(HF_SCHEDULES[schedule], optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, cfg: OptimConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """The run's schedule (`schedule_for`) with ``ceil(warmup_ratio * total_steps)`` warmup steps."""
    return schedule_for(optimizer, cfg.schedule, warmup_steps(total_steps, cfg.warmup_ratio), total_steps)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak lr at ``step`` (0-based) under `schedule_for`: ``step / warmup`` during the warmup."""
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    return float(schedule_for(probe, schedule, warmup, total).lr_lambdas[0](step))
