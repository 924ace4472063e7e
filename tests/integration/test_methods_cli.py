"""One tiny training run per method through the CLI (loss falls), then export / merge / import through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scitune.cli import main


def losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def beit_tower(tmp_path_factory) -> str:
    import transformers as tf

    root = tmp_path_factory.mktemp("beit")
    cfg = tf.BeitConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, image_size=32, patch_size=8
    )
    tf.BeitModel(cfg, add_pooling_layer=False).save_pretrained(root)
    tf.BeitImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(root)
    return str(root)


def train(tmp_path, base, data, name, *extra) -> list[float]:
    out = tmp_path / name
    args = [
        "train",
        "--config",
        "tiny/align",
        "--model.vision.path",
        base["vision"],
        "--model.llm.path",
        base["llm"],
        "--data.train",
        str(data),
        "--train.out_dir",
        str(out),
        "--train.epochs",
        "6",
        "--train.progress",
        "false",
        *extra,
    ]
    assert main(args) == 0
    return losses(out)


def test_magma_adapters_train(tmp_path, tiny_base, color_data):
    got = train(tmp_path, tiny_base, color_data, "magma", "--model.adapter.name", "magma", "--optim.lr", "2e-2")
    plain = train(tmp_path, tiny_base, color_data, "plain", "--optim.lr", "2e-2")  # connector only
    assert got[-1] < got[0] - 0.1
    assert got[-1] < plain[-1] - 0.1  # the adapters in the frozen LM add what the connector alone cannot
    meta = json.loads((tmp_path / "magma" / "final" / "scitune.json").read_text())
    assert meta["adapter"]["name"] == "magma" and meta["llm"]["saved"] == "base"


def test_limber_linear_map_trains_with_frozen_beit(tmp_path, tiny_base, color_data, beit_tower):
    got = train(
        tmp_path,
        tiny_base,
        color_data,
        "limber",
        "--model.vision.name",
        "auto",
        "--model.vision.path",
        beit_tower,
        "--model.vision.feature_layer",
        "-1",
        "--model.vision.select",
        "pooled",
        "--model.projector.name",
        "linear-prefix",
        "--model.projector.num_tokens",
        "4",
        "--optim.lr",
        "3e-2",
    )
    assert sum(got[-3:]) / 3 < got[0]


def test_lora_finetune_merge_export_import(tmp_path, tiny_base, color_data):
    from transformers import LlavaForConditionalGeneration

    from scitune.loader import load

    got = train(
        tmp_path,
        tiny_base,
        color_data,
        "lora",
        "--train.stage",
        "finetune",
        "--train.lora.r",
        "8",
        "--train.lora.alpha",
        "16",
        "--model.projector.name",
        "linear",
    )
    assert got[-1] < got[0] - 0.3
    final = tmp_path / "lora" / "final"
    assert (final / "llm_lora" / "adapter_config.json").is_file()  # PEFT's own format
    assert main(["export", "merge-lora", "--checkpoint", str(final), "--out", str(tmp_path / "merged")]) == 0
    a, b = load(final).model, load(tmp_path / "merged").model
    ids = torch.tensor([[1] + [a.image_token_id] * 16 + [9, 10]])
    pix = torch.randn(1, 3, 32, 32)
    assert torch.allclose(a(ids, pixel_values=pix).logits, b(ids, pixel_values=pix).logits, atol=1e-5)
    assert main(["export", "hf", "--checkpoint", str(tmp_path / "merged"), "--out", str(tmp_path / "hf")]) == 0
    hf = LlavaForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    assert (hf(input_ids=ids, pixel_values=pix).logits - b(ids, pixel_values=pix).logits).abs().max() < 1e-5
    assert main(["import", "hf", str(tmp_path / "hf"), "--out", str(tmp_path / "imported")]) == 0
    # the imported checkpoint keeps training
    more = train(
        tmp_path,
        tiny_base,
        color_data,
        "again",
        "--model.init_from",
        str(tmp_path / "imported"),
        "--train.stage",
        "finetune",
        "--train.epochs",
        "1",
    )
    assert len(more) == 4
