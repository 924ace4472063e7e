"""FSDP (torch's FSDP2 ``fully_shard`` on 2 CPU gloo processes) through scitune's FSDP state code: SIGKILL, resume,
bit-identical losses and weights; a 2-process checkpoint loads on 1 process with the same weights; export works."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from runkit import losses, weights, write_run_config

HERE = Path(__file__).resolve().parent


def _torchrun(n: int, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    port = str(29700 + random.Random().randint(0, 250))
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(n),
        "--master_port",
        port,
        str(HERE / "fsdp2_run.py"),
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_fsdp2_kill_resume_is_bit_identical_and_reshards_to_one_process(tmp_path, tiny_base, color_data, capsys):
    from safetensors.torch import load_file

    from scitune.cli import main

    cfg = write_run_config(tmp_path, tiny_base, color_data, stage="finetune", save_every=1)
    ref = _torchrun(2, "--config", str(cfg), "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert len(losses(tmp_path / "ref")) == 8
    kill_at = random.Random().randint(1, 6)
    killed = _torchrun(
        2, "--config", str(cfg), "--out", str(tmp_path / "run"), env={"SCITUNE_FAULT_AFTER_STEP": str(kill_at)}
    )
    assert killed.returncode != 0
    resumed = _torchrun(2, "--config", str(cfg), "--out", str(tmp_path / "run"), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    where = f"killed after step {kill_at}"
    assert losses(tmp_path / "run") == losses(tmp_path / "ref"), where
    final, ref_final = tmp_path / "run" / "final", tmp_path / "ref" / "final"
    assert weights(final) == weights(ref_final), where  # model files, every shard of fsdp/, RNG: all the same
    assert sorted(p.name for p in (final / "fsdp").glob("*.safetensors")) == [
        "shard-00001-model-00001-of-00001.safetensors",
        "shard-00002-model-00001-of-00001.safetensors",
    ]  # each process wrote its own part

    one = _torchrun(1, "--config", str(cfg), "--reshard", str(final), "--dump", str(tmp_path / "one.safetensors"))
    assert one.returncode == 0, one.stderr[-3000:]
    gathered = load_file(str(tmp_path / "one.safetensors"))
    saved_llm = {}
    for f in (final / "llm").glob("*.safetensors"):
        saved_llm.update(load_file(str(f)))
    assert saved_llm and all(gathered[f"llm.{k}"].equal(v) for k, v in saved_llm.items())
    projector = load_file(str(final / "projector.safetensors"))
    assert all(gathered[f"projector.{k}"].equal(v) for k, v in projector.items())

    assert main(["checkpoint", "verify", str(final)]) == 0, capsys.readouterr()
    assert main(["export", "hf", "--checkpoint", str(final), "--out", str(tmp_path / "hf")]) == 0, capsys.readouterr()
