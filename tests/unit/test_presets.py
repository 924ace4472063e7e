"""Every preset parses and builds with tiny overrides (the same builder code, tiny local weights)."""

from __future__ import annotations

import pytest

from scitune.cli.common import parse_run, run_parser
from scitune.config.io import PRESETS
from scitune.loader import build


@pytest.mark.parametrize("name", PRESETS.names())
def test_preset_builds_with_tiny_overrides(name, tiny_base, tmp_path):
    cfg, text, _ = parse_run(run_parser("train", ""), ["--config", name])
    assert f"stage: {cfg.train.stage}" in text
    assert cfg.train.global_batch_size % cfg.train.micro_batch_size == 0
    tiny_args = [
        "--config",
        name,
        "--model.vision.name",
        "clip",
        "--model.vision.path",
        tiny_base["vision"],
        "--model.llm.path",
        tiny_base["llm"],
        "--model.llm.dtype",
        "float32",
        "--model.init_from",
        "null",
    ]
    tiny, _, _ = parse_run(run_parser("train", ""), tiny_args)
    model, _ = build(tiny.model, tiny.data.template)
    want_tokens = tiny.model.projector.num_tokens or (1 if tiny.model.vision.select == "pooled" else 16)
    assert model.num_image_tokens == want_tokens
    names = {
        "linear": "LinearProjector",
        "mlp2x-gelu": "MlpProjector",
        "linear-prefix": "LinearPrefixProjector",
        "linear-ln": "LinearNormProjector",
    }
    assert type(model.projector).__name__ == names[tiny.model.projector.name]
    assert (model.adapters is not None) == bool(tiny.model.adapter.name)


def test_paper_settings_of_scitune_presets():
    for size in ("7b", "13b"):
        align, _, _ = parse_run(run_parser("train", ""), ["--config", f"scitune-llama-{size}/align"])
        assert (align.train.epochs, align.train.global_batch_size, align.optim.lr, align.data.max_length) == (
            1,
            128,
            2e-3,
            2048,
        )
        assert align.model.projector.name == "linear" and align.model.vision.name == "clip-vit-l-14"
        ft, _, _ = parse_run(run_parser("train", ""), ["--config", f"scitune-llama-{size}/finetune"])
        assert ft.train.epochs == 12 and ft.train.stage == "finetune"
        assert ft.model.init_from.endswith(f"scitune-llama-{size}-align/final")
