"""A training checkpoint keeps its run config as ``scitune_run.json``: no ``config.json`` that HF loaders would take
for a model config; checkpoints written before (``config.json``) are still read."""

from __future__ import annotations

import json

import pytest

from scitune.model.checkpoint import LEGACY_RUN_CONFIG_FILE, RUN_CONFIG_FILE, read_run_config


def test_a_trained_checkpoint_has_no_config_json_for_autoconfig(
    tmp_path, tiny_base, color_data, fresh_accelerate_state
):
    from transformers import AutoConfig

    from conftest import tiny_run_config
    from scitune.loader import load
    from scitune.train.loop import train

    result = train(tiny_run_config(tiny_base, color_data, tmp_path / "run", max_steps=1))
    ckpt = tmp_path / "run" / "final"
    assert result.final_checkpoint == str(ckpt)
    assert (ckpt / RUN_CONFIG_FILE).is_file() and not (ckpt / "config.json").exists()
    run = read_run_config(ckpt)
    assert run["data"]["train"] == str(color_data) and run["train"]["stage"] == "align"
    with pytest.raises((OSError, ValueError)):  # nothing there for AutoConfig to mistake for a model config
        AutoConfig.from_pretrained(ckpt)
    load(ckpt)  # and the checkpoint itself loads as before


def test_an_older_checkpoints_config_json_is_still_read_and_a_models_is_not(tmp_path):
    run = {"model": {}, "data": {"train": "d.jsonl"}, "optim": {}, "train": {"stage": "finetune"}}
    (tmp_path / LEGACY_RUN_CONFIG_FILE).write_text(json.dumps(run))
    assert read_run_config(tmp_path) == run
    (tmp_path / LEGACY_RUN_CONFIG_FILE).write_text(json.dumps({"model_type": "llava", "text_config": {}}))
    assert read_run_config(tmp_path) is None
    (tmp_path / RUN_CONFIG_FILE).write_text(json.dumps(run))
    assert read_run_config(tmp_path) == run
