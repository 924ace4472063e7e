"""FSDP training state in checkpoints: the sharded model and optimizer state through ``torch.distributed.checkpoint``,
each process writing its own part as safetensors (never a pickle), read back with resharding to any process count.

The folder (``fsdp/`` in a checkpoint) holds one safetensors file per process with the DTensor shards and their
offsets (torch's `HuggingFaceStorageWriter` with ``save_distributed``), and ``scalars.json`` with what is not a
tensor (the optimizer's hyperparameters per group). Loading plans the reads for the current sharding, so a run saved
on 2 processes resumes on 1 (or 4) with the same weights and optimizer moments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

FOLDER = "fsdp"
SCALARS = "scalars.json"


def _options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(flatten_optimizer_state_dict=True)


def _split(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(tensors, scalars)``: the model's and optimizer's sharded state, flattened to ``model.*`` / ``optim.*``."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, optimizer, options=_options())
    tensors = {f"model.{k}": v for k, v in msd.items()}
    tensors.update({f"optim.{k}": v for k, v in osd.items() if torch.is_tensor(v)})
    scalars = {k: v for k, v in osd.items() if not torch.is_tensor(v)}
    return tensors, scalars


def save_fsdp_state(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Every process writes its shard of the model and optimizer state into ``folder`` (call on all processes)."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    folder = Path(folder)
    tensors, scalars = _split(model, optimizer)
    dcp.save(tensors, storage_writer=HuggingFaceStorageWriter(str(folder), save_distributed=True))
    if not dist.is_initialized() or dist.get_rank() == 0:
        (folder / SCALARS).write_text(json.dumps(scalars, sort_keys=True), encoding="utf-8")


def load_fsdp_state(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Restore the model and optimizer state of ``folder`` into the (sharded) ``model`` and ``optimizer``, whatever
    the number of processes that wrote it (call on all processes)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.checkpoint.state_dict import set_state_dict

    folder = Path(folder)
    tensors, scalars = _split(model, optimizer)  # the current sharding: the reads are planned for it
    dcp.load(tensors, storage_reader=HuggingFaceStorageReader(str(folder)))
    saved = json.loads((folder / SCALARS).read_text(encoding="utf-8"))
    msd = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    osd = {**scalars, **saved, **{k[len("optim.") :]: v for k, v in tensors.items() if k.startswith("optim.")}}
    set_state_dict(model, optimizer, model_state_dict=msd, optim_state_dict=osd, options=_options())


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole (unsharded) model state on CPU, gathered from every process (call on all processes)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
