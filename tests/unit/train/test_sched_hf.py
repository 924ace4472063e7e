"""The lr schedule is transformers': every step's lr equals HF's reference schedule for each --optim.schedule, the
warmup starts at 0, and the scheduler's state survives the JSON checkpoint (an exact resume)."""

from __future__ import annotations

import json
import math
import typing

import pytest
import torch
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

from scitune.config.schema import OptimConfig
from scitune.train.optim import HF_SCHEDULES, build_scheduler, lr_factor, warmup_steps
from scitune.train.state import load_training_state, rng_state, save_training_state

REFERENCE = {
    "cosine": lambda opt, w, t: get_cosine_schedule_with_warmup(opt, w, t),
    "linear": lambda opt, w, t: get_linear_schedule_with_warmup(opt, w, t),
    "constant": lambda opt, w, t: get_constant_schedule_with_warmup(opt, w),
}


def _optimizer(lr: float = 2e-3) -> torch.optim.Optimizer:
    p = torch.nn.Parameter(torch.zeros(2))
    return torch.optim.AdamW([{"params": [p]}, {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr / 10}], lr=lr)


def _lrs(scheduler, optimizer, steps: int) -> list[list[float]]:
    out = [scheduler.get_last_lr()]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        out.append(scheduler.get_last_lr())
    return out


def test_every_schedule_name_maps_to_an_hf_name():
    from transformers.trainer_utils import SchedulerType

    allowed = typing.get_args(typing.get_type_hints(OptimConfig)["schedule"])
    assert set(HF_SCHEDULES) == set(allowed)
    assert all(SchedulerType(v).value == v for v in HF_SCHEDULES.values())  # names transformers knows
    assert HF_SCHEDULES["constant"] == "constant_with_warmup"  # HF's "constant" would ignore the warmup


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
@pytest.mark.parametrize(("total", "ratio"), [(20, 0.0), (20, 0.1), (7, 0.3), (50, 0.03), (1, 0.5)])
def test_lr_at_every_step_equals_transformers(schedule, total, ratio):
    cfg = OptimConfig(lr=2e-3, warmup_ratio=ratio, schedule=schedule)
    ours_opt, ref_opt = _optimizer(), _optimizer()
    warmup = math.ceil(ratio * total)
    assert warmup_steps(total, ratio) == warmup
    ours = _lrs(build_scheduler(ours_opt, total, cfg), ours_opt, total + 2)
    ref = _lrs(REFERENCE[schedule](ref_opt, warmup, total), ref_opt, total + 2)
    assert ours == ref  # exactly the same numbers, step by step, for both lr groups
    if warmup:
        assert ours[0] == [0.0, 0.0]  # HF's warmup starts at lr 0 at step 0
        for step in range(min(warmup, total - 1) + 1):  # linear from 0 to the peak, step / warmup
            assert ours[step][0] == pytest.approx(2e-3 * step / warmup)
    else:
        assert ours[0] == [2e-3, 2e-4]
    if warmup < total:
        assert ours[warmup][0] == pytest.approx(2e-3)  # the peak right after the warmup
        if schedule != "constant":
            assert ours[total][0] == pytest.approx(0.0, abs=1e-12)
    for step in range(total + 1):
        assert lr_factor(step, total, warmup, schedule) == pytest.approx(ours[step][0] / 2e-3)


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="--optim.schedule"):
        lr_factor(0, 10, 1, "polynomial")


def test_scheduler_state_round_trips_through_the_json_checkpoint(tmp_path):
    cfg = OptimConfig(lr=1e-2, warmup_ratio=0.2, schedule="cosine")
    total = 10
    opt = _optimizer(cfg.lr)
    sched = build_scheduler(opt, total, cfg)
    _lrs(sched, opt, 4)  # 4 steps in: 2 warmup steps done, decaying
    save_training_state(tmp_path, opt, sched, {"step": 4}, [rng_state()])
    json.loads((tmp_path / "trainer_state.json").read_text())  # plain JSON, no pickled lambdas
    expected = _lrs(sched, opt, total - 4)

    fresh_opt = _optimizer(cfg.lr)
    fresh = build_scheduler(fresh_opt, total, cfg)
    progress = load_training_state(tmp_path, fresh_opt, fresh, rank=0)
    assert progress["step"] == 4
    assert fresh.last_epoch == 4 and fresh.get_last_lr() == expected[0]
    assert [g["lr"] for g in fresh_opt.param_groups] == expected[0]
    assert _lrs(fresh, fresh_opt, total - 4) == expected
