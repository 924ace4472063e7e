"""ZeRO shard checks that need no DeepSpeed: a wrong process count or a missing shard is a clear error."""

from __future__ import annotations

import pytest

from scitune.train.state import load_zero_shard, zero_optimizer


def test_zero_shards_need_the_same_process_count_and_every_file(tmp_path):
    with pytest.raises(ValueError, match="shards of 2 processes; resume it with 2, not 1"):
        load_zero_shard(tmp_path, object(), 0, shards=2)
    with pytest.raises(FileNotFoundError, match="missing zero_rank0.safetensors"):
        load_zero_shard(tmp_path, object(), 0, shards=1)


def test_only_a_zero_1_2_optimizer_has_shards():
    import torch

    plain = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))])
    assert zero_optimizer(plain) is None
    assert zero_optimizer(type("DeepSpeedOptimizerWrapper", (), {"optimizer": plain})()) is None
