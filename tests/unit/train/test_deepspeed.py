"""DeepSpeed ZeRO-2 through `accelerate launch` (DeepSpeed's CPU accelerator, 2 processes): the same steps as one
plain process, with scitune's own accumulation, and checkpoints with per-process optimizer shards that resume
exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runkit import losses, run_cli
from runkit import write_run_config as write_config

pytest.importorskip("deepspeed", reason="DeepSpeed is in the dev extra; pip install deepspeed")

REPO = Path(__file__).resolve().parents[3]


def _zero2_cpu_config(tmp: Path) -> Path:
    """The repo's ZeRO-2 accelerate config, on 2 CPU processes in fp32."""
    cfg = yaml.safe_load((REPO / "configs" / "accelerate" / "deepspeed-zero2.yaml").read_text())
    cfg.update(num_processes=2, mixed_precision="no", use_cpu=True, main_process_port=29541)
    path = tmp / "zero2-cpu.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _launch(tmp: Path, cfg: Path, out: str, *extra: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(_zero2_cpu_config(tmp)),
            "-m", "scitune", "train", "--config", str(cfg), "--train.out_dir", str(tmp / out), *extra]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)


def test_zero2_two_processes_match_one_plain_process_and_resume(tmp_path, tiny_base, color_data):
    # global batch 8 = micro 2 x accum 2 x 2 processes: DeepSpeed must step once per 2 micro-batches
    cfg = write_config(tmp_path, tiny_base, color_data, epochs=2, micro_batch_size=2, global_batch_size=8,
                       save_every=2)  # fmt: skip
    one = run_cli("train", "--config", str(cfg), "--train.out_dir", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-2000:]
    ds = _launch(tmp_path, cfg, "ds")
    assert ds.returncode == 0, ds.stderr[-4000:]
    assert "micro 2 x accum 2 x 2 procs" in ds.stderr
    a, b = losses(tmp_path / "one"), losses(tmp_path / "ds")
    assert len(a) == len(b) == 4
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5
    ckpt = tmp_path / "ds" / "checkpoints" / "step-000002"
    assert {f"zero_rank{r}.{x}" for r in (0, 1) for x in ("safetensors", "json")} <= {p.name for p in ckpt.iterdir()}
    assert not list((tmp_path / "ds" / "checkpoints").glob(".zero-*"))  # the staging folder is gone
    # resume from step 2 with each process's fp32 partition and AdamW moments: the same steps 3 and 4
    (tmp_path / "ds" / "final").rename(tmp_path / "ds-final")
    again = _launch(tmp_path, cfg, "ds", "--train.resume", "latest")
    assert again.returncode == 0, again.stderr[-4000:]
    assert "resumed from" in again.stderr and "moments restart" not in again.stderr
    c = losses(tmp_path / "ds")
    assert len(c) == 4 and max(abs(x - y) for x, y in zip(b, c)) < 1e-6
