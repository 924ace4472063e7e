"""Speed features give the same results: packing (loss and gradients), the frozen-feature cache (align losses)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scitune.config.schema import LoraConfig
from scitune.data.collate import collate, collate_packed, pack_rows
from scitune.data.dataset import SupervisedDataset, validate_file
from scitune.io import DataError
from scitune.loader import build, tiny_vlm
from scitune.train.loss import token_loss_sum
from scitune.train.stages import prepare_stage


def test_pack_rows_never_splits_and_respects_the_length():
    lengths = [5, 9, 3, 7, 2, 8, 1, 10]
    rows = pack_rows(lengths, 12)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 12 for r in rows)
    assert len(rows) < len(lengths)


def _samples(tmp_path, color_data, processor):
    samples, report = validate_file(color_data, processor, max_length=512)
    assert report.ok
    return SupervisedDataset(samples, processor.images)


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    spans = {k: batch[k] for k in ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k") if k in batch}
    out = model(
        batch["input_ids"],
        batch.get("attention_mask"),
        batch["pixel_values"],
        position_ids=batch.get("position_ids"),
        **spans,
    )
    ce = token_loss_sum(out.logits, batch["labels"])
    n = int((batch["labels"][:, 1:] != -100).sum())
    (ce / n).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return float(ce / n), grads


def test_packed_equals_unpacked_loss_and_gradients(tmp_path, color_data):
    model, processor = tiny_vlm()
    prepare_stage(model, "finetune", LoraConfig())
    data = _samples(tmp_path, color_data, processor)
    items = [data[i] for i in range(8)]
    pad = processor.pad_token_id
    plain, packed = collate(items, pad), collate_packed(items, pad, max_length=3 * len(items[0]["input_ids"]))
    assert packed["input_ids"].shape[0] < plain["input_ids"].shape[0]  # fewer rows
    assert packed["attention_mask"] is None and (packed["position_ids"][:, 0] == 0).all()
    l1, g1 = _loss_and_grads(model, plain)
    l2, g2 = _loss_and_grads(model, packed)
    assert abs(l1 - l2) < 1e-5
    assert g1.keys() == g2.keys() and len(g1) > 10
    for k in g1:
        assert torch.allclose(g1[k], g2[k], atol=1e-5, rtol=1e-4), k


def test_varlen_attention_attends_per_sample_with_the_same_loss_and_gradients(tmp_path, color_data, monkeypatch):
    from scitune.model import varlen

    model, processor = tiny_vlm()
    prepare_stage(model, "finetune", LoraConfig())
    data = _samples(tmp_path, color_data, processor)
    items = [data[i] for i in range(6)]
    pad = processor.pad_token_id
    plain = collate(items, pad)
    one_row = collate_packed(items, pad, max_length=10**6)  # the whole micro-batch in one row, as the trainer packs
    assert one_row["input_ids"].shape[0] == 1
    kwargs = varlen.packed_kwargs(one_row["position_ids"])
    lengths = [len(x["input_ids"]) for x in items]
    spans = (kwargs["cu_seq_lens_q"][1:] - kwargs["cu_seq_lens_q"][:-1]).tolist()
    assert sorted(spans) == sorted(lengths) and kwargs["max_length_q"] == max(lengths)
    calls = []
    sdpa = varlen.sdpa_varlen_forward

    def counting(module, query, *args, **kw):
        calls.append((query.shape[2], "cu_seq_lens_q" in kw))
        return sdpa(module, query, *args, **kw)

    monkeypatch.setattr(varlen, "sdpa_varlen_forward", counting)
    l1, g1 = _loss_and_grads(model, plain)
    with varlen.varlen_attention(model.llm) as on:
        assert on and model.llm.config._attn_implementation == varlen.VARLEN
        l2, g2 = _loss_and_grads(model, {**one_row, **kwargs})
        l3, g3 = _loss_and_grads(model, plain)  # a padded batch inside the block: plain SDPA with its mask
    assert model.llm.config._attn_implementation == "sdpa"  # restored
    n_layers = model.llm.config.num_hidden_layers
    assert calls[:n_layers] == [(sum(lengths), True)] * n_layers and len(calls) == 2 * n_layers
    assert abs(l1 - l2) < 1e-5 and l1 == l3
    for k in g1:
        assert torch.allclose(g1[k], g2[k], atol=1e-5, rtol=1e-4), k


def _run(tmp_path, tiny_base, color_data, name, **data_opts):
    from conftest import tiny_run_config
    from scitune.train.loop import train

    cfg = tiny_run_config(tiny_base, color_data, tmp_path / name, data=data_opts, epochs=2)
    return train(cfg).losses


def test_cached_features_give_the_same_align_losses(tmp_path, tiny_base, color_data):
    from scitune.config.schema import LlmConfig, ModelConfig, ProjectorConfig, VisionConfig
    from scitune.train.feature_cache import build_feature_cache

    model = build(
        ModelConfig(
            vision=VisionConfig(name="clip", path=tiny_base["vision"]),
            projector=ProjectorConfig("mlp2x-gelu"),
            llm=LlmConfig(path=tiny_base["llm"]),
        )
    )
    manifest = build_feature_cache(model, color_data, tmp_path / "cache", batch_size=3, progress=False)
    assert manifest["images"] == 4  # 16 files, 4 distinct contents: keyed by content hash
    plain = _run(tmp_path, tiny_base, color_data, "plain")
    cached = _run(tmp_path, tiny_base, color_data, "cached", feature_cache=str(tmp_path / "cache"))
    packed = _run(tmp_path, tiny_base, color_data, "packed", feature_cache=str(tmp_path / "cache"), packing=True)
    assert max(abs(a - b) for a, b in zip(plain, cached)) < 1e-6
    assert max(abs(a - b) for a, b in zip(plain, packed)) < 1e-5


def test_training_with_packing_attends_per_sample_or_turns_packing_off(tmp_path, tiny_base, color_data, monkeypatch,
                                                                      caplog):  # fmt: skip
    from scitune.model import varlen

    spans = []
    sdpa = varlen.sdpa_varlen_forward

    def counting(module, query, *args, **kw):
        spans.append(len(kw["cu_seq_lens_q"]) - 1 if "cu_seq_lens_q" in kw else 0)
        return sdpa(module, query, *args, **kw)

    monkeypatch.setattr(varlen, "sdpa_varlen_forward", counting)
    plain = _run(tmp_path, tiny_base, color_data, "plain")
    packed = _run(tmp_path, tiny_base, color_data, "packed", packing=True)
    assert max(abs(a - b) for a, b in zip(plain, packed)) < 1e-5
    assert spans and min(spans) >= 2  # every forward of the packed run: one row holding several samples
    # a transformers that neither runs sdpa_varlen nor masks packed rows: packing is off, with a warning
    monkeypatch.setattr(varlen, "register", lambda: False)
    monkeypatch.setattr(varlen, "masks_packed_rows", lambda: False)
    with caplog.at_level("WARNING"):
        off = _run(tmp_path, tiny_base, color_data, "off", packing=True)
    assert off == plain and "--data.packing is off" in caplog.text


def test_cache_of_another_encoder_is_refused_and_corrupt_shards_are_named(tmp_path, tiny_base, color_data):
    from scitune.config.schema import LlmConfig, ModelConfig, VisionConfig
    from scitune.data.feature_store import FeatureStore
    from scitune.train.feature_cache import build_feature_cache, model_feature_identity

    model = build(
        ModelConfig(
            vision=VisionConfig(name="clip", path=tiny_base["vision"], feature_layer=-1),
            llm=LlmConfig(path=tiny_base["llm"]),
        )
    )
    build_feature_cache(model, color_data, tmp_path / "cache", progress=False)
    other = build(
        ModelConfig(
            vision=VisionConfig(name="clip", path=tiny_base["vision"], feature_layer=-2),
            llm=LlmConfig(path=tiny_base["llm"]),
        )
    )
    with pytest.raises(DataError, match="rebuild the cache"):
        FeatureStore(tmp_path / "cache", model_feature_identity(*other))
    store = FeatureStore(tmp_path / "cache", model_feature_identity(*model))
    key = next(iter(store.index))
    shard = tmp_path / "cache" / store.index[key]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(DataError, match="cannot read cached features"):
        FeatureStore(tmp_path / "cache", model_feature_identity(*model)).get(key)
    assert json.loads((tmp_path / "cache" / "cache.json").read_text())["images"] == 4


def test_cache_features_command_builds_a_cache_the_training_model_accepts(tmp_path, tiny_base, color_data, capsys):
    """`scitune data cache-features` loads only the encoder; its cache matches the full model's features."""
    from scitune.cli.data import main
    from scitune.config.schema import LlmConfig, ModelConfig, ProjectorConfig, VisionConfig
    from scitune.data.dataset import load_image
    from scitune.data.feature_store import FeatureStore, image_key
    from scitune.train.feature_cache import model_feature_identity

    argv = ["cache-features", "--config", "tiny/align", "--model.vision.path", tiny_base["vision"],
            "--model.llm.path", tiny_base["llm"], "--data.train", str(color_data), "--out", str(tmp_path / "c"),
            "--no_progress", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 4
    model, processor = build(
        ModelConfig(
            vision=VisionConfig(name="clip", path=tiny_base["vision"]),
            projector=ProjectorConfig("mlp2x-gelu"),
            llm=LlmConfig(path=tiny_base["llm"]),
        )
    )
    store = FeatureStore(tmp_path / "c", model_feature_identity(model, processor))  # accepted: same encoder identity
    first = json.loads(Path(color_data).read_text().splitlines()[0])["image"]
    path = Path(color_data).parent / first
    pix = processor.images([load_image(path)])["pixel_values"]
    with torch.no_grad():
        want = model.vision(pix)[0]
    assert torch.allclose(store.get(image_key(str(path))), want, atol=1e-6)
    assert main(argv[:7] + ["--out", str(tmp_path / "d")]) == 2  # no --data.train: a clear error
