"""Thin helpers over accelerate: the one place where single-process and DDP/FSDP runs differ."""

from __future__ import annotations

from typing import Any

import torch


def make_accelerator(precision: str, report_to: list[str] | None = None, project_dir: str | None = None):
    """An `accelerate.Accelerator` for this run (accumulation is done by the loop, not by accelerate)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    mp = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
    # the process group forms on the CPU (gloo) when there is no CUDA, DeepSpeed's CPU launches included: the shared
    # state made first decides it for the Accelerator below
    is_main_process()
    # Without CUDA, cpu=True lets a torchrun-style launch (WORLD_SIZE > 1) form a gloo process group. It would also
    # turn a DeepSpeed launch into plain multi-CPU DDP, so a DeepSpeed launch keeps DeepSpeed (its CPU accelerator).
    return Accelerator(
        cpu=not torch.cuda.is_available() and not uses_deepspeed(),
        mixed_precision=mp,
        log_with=report_to or None,
        project_config=ProjectConfiguration(project_dir=project_dir) if project_dir else None,
    )


def uses_deepspeed() -> bool:
    """Whether this process was started by ``accelerate launch`` with a DeepSpeed config."""
    from accelerate.utils import parse_flag_from_env

    return parse_flag_from_env("ACCELERATE_USE_DEEPSPEED")


def configure_deepspeed(accelerator, micro_batch: int, accum: int, max_grad_norm: float) -> None:
    """Tell DeepSpeed the run's batch layout before ``prepare`` (the loop builds no DataLoader for it to read).

    The loop accumulates ``accum`` micro-batches per step itself; DeepSpeed must agree on the count so that it
    reduces gradients and steps only at the step boundary, and it clips with ``--optim.max_grad_norm``.
    """
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return
    ds = plugin.deepspeed_config
    ds["train_micro_batch_size_per_gpu"] = micro_batch
    ds["gradient_accumulation_steps"] = accum
    ds["train_batch_size"] = micro_batch * accum * accelerator.num_processes
    ds["gradient_clipping"] = max_grad_norm
    ds.setdefault("zero_allow_untested_optimizer", True)  # torch's AdamW, built by scitune
    plugin.gradient_accumulation_steps = accum


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
