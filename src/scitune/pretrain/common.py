"""Helpers shared by the micro pretraining loops: the loop itself, the learning-rate schedule, atomic folder writes."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def cosine_lr(step: int, total: int, peak: float, warmup_ratio: float = 0.1, floor: float = 0.05) -> float:
    """Linear warmup to ``peak`` over ``warmup_ratio`` of the steps, then cosine decay to ``floor * peak``."""
    warm = max(1, int(warmup_ratio * total))
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def save_folder(out_dir: str | os.PathLike[str], writer: Callable[[Path], Any]) -> Path:
    """Run ``writer(tmp)`` into a temp folder beside ``out_dir``, then swap it in (`write_output_folder`: an earlier
    micro model there is replaced, a folder of anything else is refused)."""
    from scitune.outputs import write_output_folder

    return write_output_folder(out_dir, "micro-model", writer)


def decay_groups(model: torch.nn.Module, weight_decay: float, exclude: str | None = None) -> list[dict[str, Any]]:
    """AdamW groups: matrices decay (except parameters whose name holds ``exclude``); vectors and scalars do not."""
    decay, keep = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and not (exclude and exclude in name) else keep).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def train_epochs(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    n: int,
    batch_size: int,
    epochs: float,
    peak_lr: float,
    seed: int,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    desc: str,
    progress: bool = True,
    after_step: Callable[[], None] | None = None,
) -> list[float]:
    """Train for ``epochs`` passes over ``n`` items in reshuffled batches (the last partial batch of a pass is
    dropped): warmup + cosine lr, gradient clipping at 1.0. ``loss_fn(indices)`` returns the batch loss.

    Returns the loss of every step.
    """
    from tqdm.auto import tqdm

    per_epoch = max(1, n // batch_size)
    total = max(1, math.ceil(epochs * per_epoch))
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    model.train()
    order = torch.randperm(n, generator=gen)
    for step in tqdm(range(total), desc=desc, disable=not progress, unit="step"):
        k = step % per_epoch
        if k == 0 and step:
            order = torch.randperm(n, generator=gen)
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, total, peak_lr)
        loss = loss_fn(order[k * batch_size : (k + 1) * batch_size])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if after_step is not None:
            after_step()
        losses.append(loss.item())
    model.eval()
    return losses
