"""Exact resume: SIGKILL at a random step and in the middle of a save, then ``--train.resume latest``; the losses and
every weight, optimizer and RNG file of the final checkpoint are bit-identical to an uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import pytest
from faultkit import forked_cli, losses, weights, write_run_config

from runkit import launch_ddp

pytestmark = pytest.mark.faults

SCENARIOS = {
    "align": {"stage": "align"},
    "lora-finetune-dropout": {"stage": "finetune", "lora": {"r": 4, "dropout": 0.05}},
    "full-finetune-accumulation": {"stage": "full-finetune", "micro_batch_size": 1},  # 4 micro-batches a step
}


def _train(cfg: Path, out: Path, *extra: str, env: dict | None = None):
    return forked_cli(["train", "--config", str(cfg), "--train.out_dir", str(out), *extra], env=env)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_killed_at_a_random_step_and_during_a_save_resumes_bit_identically(name, tmp_path, tiny_base, color_data):
    opts = SCENARIOS[name]
    cfg = write_run_config(tmp_path, tiny_base, color_data, save_every=1, keep_last=2, **opts)
    ref = _train(cfg, tmp_path / "ref")
    assert ref.rc == 0, ref.err[-3000:]
    total = len(losses(tmp_path / "ref"))
    assert total == 8
    rng = random.Random()
    kill_at = rng.randint(1, total - 3)
    save_kill_at = rng.randint(kill_at + 1, total - 1)
    where = f"killed after step {kill_at}, then during the save of step {save_kill_at}"

    run = tmp_path / "run"
    first = _train(cfg, run, env={"SCITUNE_FAULT_AFTER_STEP": str(kill_at)})
    assert first.signal == signal.SIGKILL, (where, first.err[-3000:])
    second = _train(cfg, run, "--train.resume", "latest", env={"SCITUNE_FAULT_IN_SAVE": str(save_kill_at)})
    assert second.signal == signal.SIGKILL, (where, second.err[-3000:])
    assert list((run / "checkpoints").glob(f".scitune-tmp-step-{save_kill_at:06d}-*")), "the torn save is hidden"
    third = _train(cfg, run, "--train.resume", "latest")
    assert third.rc == 0, (where, third.err[-3000:])
    assert f"resumed from {run / 'checkpoints' / f'step-{save_kill_at - 1:06d}'}" in third.err, where

    assert losses(run) == losses(tmp_path / "ref"), where  # exactly, not approximately
    assert weights(run / "final") == weights(tmp_path / "ref" / "final"), where
    assert not list((run / "checkpoints").glob(".scitune-*")), "leftovers of the torn save were cleaned up"


def _launch(tmp: Path, cfg: Path, out: Path, *extra: str, env: dict | None = None):
    return launch_ddp(cfg, out, *extra, port=29600 + os.getpid() % 300, env=env)


@pytest.mark.slow
def test_ddp_two_processes_killed_then_resumed_bit_identically(tmp_path, tiny_base, color_data):
    """LoRA with dropout on 2 gloo processes: each process's RNG is saved and restored."""
    cfg = write_run_config(
        tmp_path, tiny_base, color_data, save_every=1, micro_batch_size=1, lora={"r": 4, "dropout": 0.05}
    )
    ref = _launch(tmp_path, cfg, tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert "x 2 procs" in ref.stderr
    kill_at = random.Random().randint(1, 6)
    killed = _launch(tmp_path, cfg, tmp_path / "run", env={"SCITUNE_FAULT_AFTER_STEP": str(kill_at)})
    assert killed.returncode != 0, killed.stderr[-3000:]
    resumed = _launch(tmp_path, cfg, tmp_path / "run", "--train.resume", "latest")
    assert resumed.returncode == 0, (kill_at, resumed.stderr[-3000:])
    assert "resumed from" in resumed.stderr
    assert losses(tmp_path / "run") == losses(tmp_path / "ref"), f"killed after step {kill_at}"
    assert weights(tmp_path / "run" / "final") == weights(tmp_path / "ref" / "final"), f"killed after step {kill_at}"
