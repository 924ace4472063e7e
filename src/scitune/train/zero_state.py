"""DeepSpeed ZeRO-1/2 optimizer shards in checkpoints, as safetensors + JSON (no pickles).

Under ZeRO each process holds its partition of the fp32 master weights and of AdamW's moments. Each process writes
``zero_rank{r}.safetensors`` (its fp32 partition and the base optimizer's tensors) and ``zero_rank{r}.json`` (the
rest of the base optimizer's state) into a staging folder next to the checkpoint; the main process moves them into
the checkpoint before the checkpoint's atomic rename. Resuming needs the same number of processes. DeepSpeed's own
bookkeeping (loss scaler, parameter-slice maps) is not saved: it is rebuilt by ``prepare`` for the same model and
layout, and taken from the fresh optimizer when the shard is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from scitune.train.state import state_dict_from_files, state_dict_to_files

BASE = "base_optimizer_state"  # deepspeed.checkpoint.constants.BASE_OPTIMIZER_STATE
FP32 = "single_partition_of_fp32_groups"  # deepspeed.checkpoint.constants.SINGLE_PARTITION_OF_FP32_GROUPS


def zero_optimizer(optimizer: Any) -> Any | None:
    """The DeepSpeed ZeRO-1/2 optimizer inside accelerate's wrapper, or None (not DeepSpeed, or ZeRO-3)."""
    inner = getattr(optimizer, "optimizer", None)
    return inner if type(inner).__name__ == "DeepSpeedZeroOptimizer" else None


def save_zero_shard(folder: Path, optimizer: Any, rank: int) -> bool:
    """Write this process's ZeRO shard into ``folder``; False when there is none to write (ZeRO-3)."""
    zero = zero_optimizer(optimizer)
    if zero is None:
        return False
    sd = zero.state_dict()
    if not isinstance(sd[BASE], dict):
        raise ValueError("DeepSpeed elastic checkpoints (zero_optimization.elastic_checkpoint) are not supported")
    base_tensors, meta = state_dict_to_files(sd[BASE])
    tensors = {f"base.{k}": v for k, v in base_tensors.items()}
    tensors.update({f"fp32.{g}": t.detach().contiguous().cpu() for g, t in enumerate(sd[FP32])})
    save_file(tensors, str(folder / f"zero_rank{rank}.safetensors"))
    (folder / f"zero_rank{rank}.json").write_text(json.dumps({**meta, "fp32_groups": len(sd[FP32])}))
    return True


def load_zero_shard(ckpt: Path, optimizer: Any, rank: int, shards: int) -> None:
    """Restore this process's fp32 partition and optimizer moments from ``ckpt``'s ZeRO shard."""
    import torch.distributed as dist

    world = dist.get_world_size() if dist.is_initialized() else 1
    if world != shards:
        raise ValueError(
            f"{ckpt} holds ZeRO optimizer shards of {shards} processes; resume it with {shards}, not {world}"
        )
    path = ckpt / f"zero_rank{rank}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{ckpt}: missing {path.name} (an incomplete copy of a DeepSpeed checkpoint?)")
    tensors = load_file(str(path))
    meta = json.loads((ckpt / f"zero_rank{rank}.json").read_text())
    zero = zero_optimizer(optimizer)
    sd = zero.state_dict()  # the fresh optimizer's bookkeeping, with the saved tensors put in
    base = {k.removeprefix("base."): v for k, v in tensors.items() if k.startswith("base.")}
    sd[BASE] = state_dict_from_files(base, meta)
    sd[FP32] = [tensors[f"fp32.{g}"] for g in range(meta["fp32_groups"])]
    zero.load_state_dict([sd] * world, load_optimizer_states=True, load_from_fp32_weights=True)
