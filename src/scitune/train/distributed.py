"""Thin helpers over accelerate: the one place where single-process and DDP/FSDP runs differ."""

from __future__ import annotations

from typing import Any

import torch


def make_accelerator(precision: str, report_to: list[str] | None = None, project_dir: str | None = None):
    """An `accelerate.Accelerator` for this run; `configure_accumulation` sets its accumulation steps once the batch
    layout is known (the loop feeds it micro-batches under ``accelerator.accumulate``)."""
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration

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
        # the loop builds its own DataLoader (never prepared): a step ends after its micro-batches, not with the
        # data; an explicit plugin also keeps ACCELERATE_GRADIENT_ACCUMULATION_STEPS from an accelerate config out
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=1, sync_with_dataloader=False),
    )


def uses_deepspeed() -> bool:
    """Whether this process was started by ``accelerate launch`` with a DeepSpeed config."""
    from accelerate.utils import parse_flag_from_env

    return parse_flag_from_env("ACCELERATE_USE_DEEPSPEED")


def configure_accumulation(accelerator, micro_batch: int, accum: int, max_grad_norm: float) -> None:
    """Tell accelerate (and DeepSpeed) the run's batch layout before ``prepare``.

    The loop runs ``accum`` micro-batches per step, each under ``accelerator.accumulate(model)``: accelerate then
    skips the gradient reduction (DDP/FSDP ``no_sync``) on all but the last, and DeepSpeed reduces and steps its
    engine only on the last. DeepSpeed reads the layout from its config (the loop builds no DataLoader for it to
    read) and clips with ``--optim.max_grad_norm``.
    """
    accelerator.gradient_accumulation_steps = accum
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
