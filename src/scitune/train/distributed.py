"""Thin helpers over accelerate: the one place where single-process and DDP/FSDP runs differ."""

from __future__ import annotations

from typing import Any

import torch


def make_accelerator(precision: str, report_to: list[str] | None = None, project_dir: str | None = None):
    """An `accelerate.Accelerator` for this run (accumulation is done by the loop, not by accelerate)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    mp = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
    # Without CUDA, cpu=True lets a torchrun-style launch (WORLD_SIZE > 1) form a gloo process group.
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=mp,
        log_with=report_to or None,
        project_config=ProjectConfiguration(project_dir=project_dir) if project_dir else None,
    )


def reduce_sum(accelerator, value: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes (identity in a single process)."""
    if accelerator.num_processes == 1:
        return value
    return accelerator.reduce(value.detach().clone(), reduction="sum")


def gather_objects(accelerator, obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order."""
    if accelerator.num_processes == 1:
        return [obj]
    from accelerate.utils import gather_object

    return gather_object([obj])


def is_main_process() -> bool:
    """True on the main process; initialises accelerate's shared state the same way the Accelerator does."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available()).is_main_process
