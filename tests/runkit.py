"""Helpers for tests that run whole trainings: a run config on the tiny base models, the CLI in a subprocess, the
same under ``accelerate launch`` with 2 gloo processes, and a run's logged losses."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import torch


def write_run_config(tmp: Path, base: dict, data: Path, stage: str = "finetune", name: str = "cfg.yaml", **train):
    """A run config file on the tiny base models (JSON is YAML): 2 epochs, global batch 4 in micro batches of 2."""
    cfg = {
        "model": {
            "vision": {"name": "clip", "path": base["vision"]},
            "projector": {"name": "mlp2x-gelu"},
            "llm": {"path": base["llm"]},
        },
        "data": {"train": str(data), "max_length": 256},
        "optim": {"lr": 5e-3, "warmup_ratio": 0.1},
        "train": {
            "stage": stage,
            "epochs": 2,
            "global_batch_size": 4,
            "micro_batch_size": 2,
            "progress": False,
            **train,
        },
    }
    path = tmp / name
    path.write_text(json.dumps(cfg))
    return path


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m scitune ARGS`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "scitune", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def launch_ddp(cfg: Path, out: Path, *extra: str, port: int, env: dict | None = None) -> subprocess.CompletedProcess:
    """``scitune train`` under ``accelerate launch`` with 2 CPU (gloo) processes."""
    argv = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
        "-m",
        "scitune",
        "train",
        "--config",
        str(cfg),
        "--train.out_dir",
        str(out),
        *extra,
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(argv, capture_output=True, text=True, timeout=400, env=env)


def losses(run_dir: Path) -> list[float]:
    """The loss of every logged step of a run."""
    return [json.loads(x)["loss"] for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]


def weights(folder: Path) -> dict[str, str]:
    """A digest of every tensor of every safetensors file of a checkpoint (model, optimizer, RNG, FSDP shards): equal
    means bit-identical tensors (a file's header may order its metadata differently)."""
    from safetensors.torch import load_file

    out = {}
    for p in sorted(folder.rglob("*.safetensors")):
        h = hashlib.sha256()
        for name, t in sorted(load_file(str(p)).items()):
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        out[p.relative_to(folder).as_posix()] = h.hexdigest()
    return out


def launch_nodes(cfg: Path, out: Path, *extra: str, port: int, env: dict | None = None, nodes: int = 2) -> list[int]:
    """``scitune train`` as a ``nodes``-machine accelerate job on this host (one gloo process per "machine", machine
    ranks 0..nodes-1, rendezvous on 127.0.0.1); returns each launch's exit status."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", **(env or {})}
    procs = []
    for rank in range(nodes):
        argv = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_machines",
            str(nodes),
            "--machine_rank",
            str(rank),
            "--num_processes",
            str(nodes),
            "--main_process_ip",
            "127.0.0.1",
            "--main_process_port",
            str(port),
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "scitune",
            "train",
            "--config",
            str(cfg),
            "--train.out_dir",
            str(out),
            *extra,
        ]
        log = open(out.parent / f"{out.name}-node{rank}.log", "a")  # noqa: SIM115 (closed below)
        procs.append((subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    codes = []
    for proc, log in procs:
        try:
            codes.append(proc.wait(timeout=400))
        finally:
            log.close()
    return codes
