"""Training loop: exact resume after SIGKILL, atomic checkpoints, 2-process DDP == 1 process, schedule, plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from runkit import launch_ddp, losses, run_cli, write_run_config
from scitune.config.schema import OptimConfig
from scitune.data.sampler import BatchPlan
from scitune.train.optim import lr_factor

write_config = write_run_config


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path, tiny_base, color_data):
    cfg = write_config(tmp_path, tiny_base, color_data, epochs=1, micro_batch_size=1)
    one = run_cli(
        "train", "--config", str(cfg), "--train.out_dir", str(tmp_path / "one"), "--train.micro_batch_size", "2"
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = launch_ddp(cfg, tmp_path / "two", port=29533)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "x 2 procs" in two.stderr
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(a) == len(b) == 4
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5


def test_warmup_then_cosine():
    # transformers' schedules (`get_scheduler`): the warmup rises from 0 at step 0 (step / warmup), where scitune's
    # own schedule used to start at 1 / warmup and reach the peak one step earlier
    assert lr_factor(0, 100, 10, "cosine") == 0.0
    assert lr_factor(1, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine") == pytest.approx(0.9)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0)
    assert lr_factor(55, 100, 10, "linear") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="warmup_ratio"):
        OptimConfig(warmup_ratio=1.5)


def test_batch_plan_is_the_same_for_any_process_count():
    one = BatchPlan(10, micro=2, accum=2, world=1, seed=3)
    two = BatchPlan(10, micro=1, accum=2, world=2, seed=3)
    for epoch in range(2):
        g1, g2 = one.global_batches(epoch), two.global_batches(epoch)
        assert g1 == g2 and len(g1) == 3
        assert set(sum(g1, [])) == set(range(10))  # every sample seen; the last batch wraps around
        for s in range(3):
            parts = [sorted(sum(two.micro_batches(epoch, s, r), [])) for r in range(2)]
            assert sorted(parts[0] + parts[1]) == sorted(sum(one.micro_batches(epoch, s, 0), []))
    assert one.global_batches(0) != one.global_batches(1)


def test_group_by_length_sorts_within_megabatches():
    lengths = list(range(64))
    plan = BatchPlan(64, micro=4, accum=1, world=1, seed=0, lengths=lengths, group_by_length=True)
    batches = plan.global_batches(0)
    spans = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert sum(spans) / len(spans) < 16  # random batches of 4 from 0..63 average a span of ~38


@pytest.mark.parametrize("lora_r", [0, 4])
def test_finetune_checkpoint_reloads_to_the_trained_model(tmp_path, tiny_base, color_data, lora_r):
    import torch

    from conftest import tiny_run_config
    from scitune.config.schema import LoraConfig
    from scitune.loader import load
    from scitune.train.loop import Trainer

    cfg = tiny_run_config(tiny_base, color_data, tmp_path / "run", "finetune", "linear", epochs=2, micro_batch_size=4,
                          lora=LoraConfig(r=lora_r, alpha=8, dropout=0.0))  # fmt: skip
    trainer = Trainer(cfg)
    result = trainer.run()
    assert result.losses[-1] < result.losses[0]
    final = Path(result.final_checkpoint)
    assert (final / ("llm_lora" if lora_r else "llm")).is_dir()
    reloaded, processor = load(final)
    ids = torch.tensor([[processor.tokenizer.bos_token_id] + [reloaded.image_token_id] * 16 + [7, 8, 9]])
    pix = torch.randn(1, 3, 32, 32)
    trained = trainer.acc.unwrap_model(trainer.model).eval()
    assert torch.allclose(trained(ids, pixel_values=pix).logits, reloaded(ids, pixel_values=pix).logits, atol=1e-5)
