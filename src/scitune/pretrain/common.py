"""Helpers shared by the micro pretraining loops: the learning-rate schedule and atomic folder writes."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cosine_lr(step: int, total: int, peak: float, warmup_ratio: float = 0.1, floor: float = 0.05) -> float:
    """Linear warmup to ``peak`` over ``warmup_ratio`` of the steps, then cosine decay to ``floor * peak``."""
    warm = max(1, int(warmup_ratio * total))
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def save_folder(out_dir: str | os.PathLike[str], writer: Callable[[Path], Any]) -> Path:
    """Run ``writer(tmp)`` into a temp folder beside ``out_dir``, then rename it to ``out_dir`` (replacing it)."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        writer(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
