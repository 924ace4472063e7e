"""Training state (optimizer, scheduler, RNG, position) as safetensors + JSON; never pickles."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from scitune.io import DataError

log = logging.getLogger(__name__)


def optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state dict into tensors (for safetensors) and JSON-able rest."""
    return state_dict_to_files(optimizer.state_dict())


def state_dict_to_files(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a torch optimizer state dict into tensors (for safetensors) and JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_files(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    optimizer.load_state_dict(state_dict_from_files(tensors, meta))


def state_dict_from_files(tensors: dict[str, torch.Tensor], meta: dict) -> dict[str, Any]:
    """The torch optimizer state dict that `state_dict_to_files` split."""
    state: dict[int, dict[str, Any]] = {}
    for key, t in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = t
    for idx, rest in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(rest)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch CPU/CUDA as tensors, python and numpy as JSON)."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    np_state = np.random.get_state()
    return {
        "tensors": tensors,
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    py = meta["python"]
    random.setstate((py[-2], tuple(py[:-2]), py[-1]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def save_training_state(
    out: Path,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    progress: dict[str, Any],
    rng_per_rank: list[dict[str, Any]],
) -> None:
    """Write optimizer.safetensors, rng_rank{r}.safetensors and trainer_state.json into ``out``.

    ``optimizer`` None (DeepSpeed ZeRO: each process writes its own shard, `save_zero_shard`) writes no
    optimizer file; ``progress["zero_shards"]`` then says how many shard files the checkpoint holds.
    """
    opt_meta = None
    if optimizer is not None:
        tensors, opt_meta = optimizer_to_files(optimizer)
        save_file(tensors, str(out / "optimizer.safetensors"))
    for r, rng in enumerate(rng_per_rank):
        save_file(rng["tensors"], str(out / f"rng_rank{r}.safetensors"))
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    state = {
        "progress": progress,
        "optimizer": opt_meta,
        "scheduler": sched,
        "rng": [{k: v for k, v in r.items() if k != "tensors"} for r in rng_per_rank],
    }
    (out / "trainer_state.json").write_text(json.dumps(state))


def load_training_state(
    ckpt: Path, optimizer: torch.optim.Optimizer, scheduler: Any, rank: int, allow_inexact: bool = False
) -> dict[str, Any]:
    """Restore optimizer, scheduler and this rank's RNG from ``ckpt``; return the saved progress.

    A checkpoint without the optimizer state or this rank's RNG state cannot be resumed exactly: that is an error
    unless ``allow_inexact`` (``--train.allow_inexact_resume``), and then a warning says what restarts.
    """
    state = json.loads((ckpt / "trainer_state.json").read_text())
    shards = state["progress"].get("zero_shards")

    def inexact(what: str) -> None:
        if not allow_inexact:
            raise DataError(
                f"{ckpt}: {what}, so the resume cannot be exact; pass --train.allow_inexact_resume true to go on"
            )
        log.warning("%s: %s: resuming inexactly (--train.allow_inexact_resume)", ckpt, what)

    if zero_optimizer(optimizer) is not None and shards:
        load_zero_shard(ckpt, optimizer, rank, shards)
    elif state["progress"].get("fsdp"):
        pass  # the sharded optimizer state is in the checkpoint's fsdp/ folder (`scitune.train.fsdp_state`)
    elif state["optimizer"] is None or is_deepspeed(optimizer):
        inexact(
            "it holds no optimizer state this run can load (DeepSpeed ZeRO-3, or another layout): AdamW's "
            "moments would restart from zero"
        )
    elif not (ckpt / "optimizer.safetensors").is_file():
        inexact("optimizer.safetensors is missing: AdamW's moments would restart from zero")
    else:
        optimizer_from_files(optimizer, load_file(str(ckpt / "optimizer.safetensors")), state["optimizer"])
    sched = scheduler.state_dict()
    sched.update(state["scheduler"])
    scheduler.load_state_dict(sched)
    rng_file = ckpt / f"rng_rank{rank}.safetensors"
    if rng_file.is_file() and rank < len(state["rng"]):
        set_rng_state(load_file(str(rng_file)), state["rng"][rank])
    else:
        inexact(
            f"{rng_file.name} is missing (written by {len(state['rng'])} process(es)): dropout and sampling "
            "would draw other random numbers"
        )
    return state["progress"]


# ---- DeepSpeed ZeRO-1/2 optimizer shards in checkpoints, as safetensors + JSON (no pickles).
#
# Under ZeRO each process holds its partition of the fp32 master weights and of AdamW's moments. Each process writes
# ``zero_rank{r}.safetensors`` (its fp32 partition and the base optimizer's tensors) and ``zero_rank{r}.json`` (the
# rest of the base optimizer's state) into a staging folder next to the checkpoint; the main process moves them into
# the checkpoint before the checkpoint's atomic rename. Resuming needs the same number of processes. DeepSpeed's own
# bookkeeping (loss scaler, parameter-slice maps) is not saved: it is rebuilt by ``prepare`` for the same model and
# layout, and taken from the fresh optimizer when the shard is loaded.


def is_deepspeed(optimizer: Any) -> bool:
    """Whether ``optimizer`` is accelerate's wrapper of a DeepSpeed (ZeRO) optimizer."""
    return type(optimizer).__name__ == "DeepSpeedOptimizerWrapper"


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
