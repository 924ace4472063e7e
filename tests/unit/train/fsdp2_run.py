"""A training run under torch's FSDP2 (``fully_shard``) on CPU gloo processes, through scitune's own data path,
loss, optimizer, checkpoint folder and FSDP state code (`scitune.train.fsdp_state`).

accelerate refuses FSDP without an accelerator, so the FSDP tests drive the same state code from here:
``torchrun --nproc_per_node 2 fsdp2_run.py --config C --out DIR [--resume]`` trains (SIGKILL through
``SCITUNE_FAULT_AFTER_STEP``), ``--reshard CKPT --dump FILE`` loads a checkpoint's sharded state on however many
processes run it and writes the gathered weights.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
from pathlib import Path

import torch
import torch.distributed as dist


def _shard(model) -> None:
    from torch.distributed.fsdp import fully_shard

    for layer in model.llm.model.layers:
        fully_shard(layer)
    fully_shard(model)


def _build(cfg):
    from scitune.loader import build
    from scitune.train.optim import build_optimizer, build_scheduler
    from scitune.train.stages import prepare_stage

    torch.manual_seed(cfg.train.seed)
    model, processor = build(cfg.model, cfg.data.template)
    prepare_stage(model, cfg.train.stage, cfg.train.lora)
    _shard(model)
    optimizer = build_optimizer(model, cfg.optim)
    return model, processor, optimizer, build_scheduler


def _save(path: Path, model, processor, optimizer, scheduler, cfg, step: int, rank: int) -> None:
    from scitune.loader import save_files
    from scitune.model.checkpoint import write_checkpoint
    from scitune.train.fsdp_state import FOLDER, full_model_state, save_fsdp_state
    from scitune.train.state import rng_state, save_training_state

    rngs = [None] * dist.get_world_size()
    dist.all_gather_object(rngs, rng_state())
    full = full_model_state(model)
    staging = path.parent / f".zero-{path.name}"
    if rank == 0:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    dist.barrier()
    save_fsdp_state(staging / FOLDER, model, optimizer)
    dist.barrier()
    if rank == 0:

        def writer(tmp: Path) -> None:
            save_files(model, processor, tmp, llm_changed=True, vision_changed=False, state_dict=full)
            save_training_state(tmp, None, scheduler, {"step": step, "stage": cfg.train.stage, "fsdp": FOLDER}, rngs)
            os.replace(staging / FOLDER, tmp / FOLDER)

        write_checkpoint(path, writer)
        shutil.rmtree(staging, ignore_errors=True)
    dist.barrier()


def train(args) -> None:
    from scitune.config.io import load_run_config
    from scitune.data.collate import collate
    from scitune.data.sampler import BatchPlan
    from scitune.data.tokenize import IGNORE_INDEX
    from scitune.train.batches import load_data
    from scitune.train.checkpointing import resolve_resume
    from scitune.train.fsdp_state import load_fsdp_state
    from scitune.train.loss import batch_loss_sum, logits_mode
    from scitune.train.state import load_training_state

    rank, world = dist.get_rank(), dist.get_world_size()
    cfg = load_run_config(args.config)
    out = Path(args.out)
    resume = resolve_resume("latest", out) if args.resume else None
    model, processor, optimizer, build_scheduler = _build(cfg)
    data = load_data(cfg, model, processor, out, rank == 0)
    tc = cfg.train
    plan = BatchPlan(
        len(data),
        tc.micro_batch_size,
        tc.global_batch_size // (tc.micro_batch_size * world),
        world,
        tc.seed,
        data.lengths,
    )
    total = int(tc.epochs * plan.steps_per_epoch)
    scheduler = build_scheduler(optimizer, total, cfg.optim)
    step = 0
    if resume is not None:
        step = int(load_training_state(resume, optimizer, scheduler, rank)["step"])
        load_fsdp_state(resume / "fsdp", model, optimizer)
    metrics = out / "metrics.jsonl"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        kept = (
            [x for x in metrics.read_text().splitlines() if json.loads(x)["step"] <= step] if metrics.exists() else []
        )
        metrics.write_text("".join(x + "\n" for x in kept))
    mode = logits_mode(model.llm)
    model.train()
    while step < total:
        epoch, at = divmod(step, plan.steps_per_epoch)
        micro = [collate([data[i] for i in idx], processor.pad_token_id) for idx in plan.micro_batches(epoch, at, rank)]
        tokens = torch.tensor(float(sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro)))
        dist.all_reduce(tokens)
        loss_sum = torch.zeros(())
        for b in micro:
            inputs = {k: b[k] for k in ("input_ids", "attention_mask", "pixel_values") if b.get(k) is not None}
            ce = batch_loss_sum(model, inputs, b["labels"], mode)
            (ce / tokens * world).backward()  # FSDP2 averages gradients over processes: the trainer's scaling
            loss_sum += ce.detach()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        dist.all_reduce(loss_sum)
        step += 1
        if rank == 0:
            with open(metrics, "a") as f:
                f.write(json.dumps({"step": step, "loss": float(loss_sum / tokens)}) + "\n")
        name = "final" if step == total else f"checkpoints/step-{step:06d}"
        if step == total or step % tc.save_every == 0:
            _save(out / name, model, processor, optimizer, scheduler, cfg, step, rank)
        if os.environ.get("SCITUNE_FAULT_AFTER_STEP") == str(step):
            os.kill(os.getpid(), signal.SIGKILL)


def reshard(args) -> None:
    """Load a checkpoint's sharded state on this run's processes; rank 0 writes the gathered weights."""
    from safetensors.torch import save_file

    from scitune.config.io import load_run_config
    from scitune.train.fsdp_state import full_model_state, load_fsdp_state

    model, _, optimizer, _ = _build(load_run_config(args.config))
    load_fsdp_state(Path(args.reshard) / "fsdp", model, optimizer)
    full = full_model_state(model)
    if dist.get_rank() == 0:
        save_file({k: v.contiguous() for k, v in full.items()}, args.dump)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--out")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--reshard")
    ap.add_argument("--dump")
    a = ap.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        reshard(a) if a.reshard else train(a)
    finally:
        dist.destroy_process_group()
