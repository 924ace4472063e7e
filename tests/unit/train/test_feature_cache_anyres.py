"""The frozen-feature cache with AnyRes: every image's overview and tiles cached (keyed by content, with its grid and
size), the same inputs as from pixels, and an align run from the cache with the same losses as from pixels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from PIL import Image

from conftest import tiny_run_config
from scitune.config.schema import LlmConfig, ModelConfig, ProjectorConfig, VisionConfig
from scitune.data.collate import collate
from scitune.data.dataset import SupervisedDataset, validate_file
from scitune.loader import build
from scitune.train.feature_cache import build_feature_cache

GRIDS = ["1x1", "1x2", "2x1", "2x2"]
SIZES = [(32, 32), (64, 32), (32, 64), (100, 30), (50, 50), (48, 40)]  # grids 1x1, 1x2, 2x1, 1x2, 2x2, 2x2


def _records(folder: Path, n: int = 12) -> Path:
    """``n`` records over the six sizes; images past the sixth are byte copies (the cache keys by content)."""
    folder.mkdir(parents=True, exist_ok=True)
    colors = ["red", "blue", "green", "yellow", "white", "purple"]
    lines = []
    for i in range(n):
        if i < len(SIZES):
            im = Image.radial_gradient("L").convert("RGB").resize(SIZES[i]).rotate(15 * i, fillcolor=colors[i])
            im.save(folder / f"im{i}.png")
        else:
            shutil.copy(folder / f"im{i % len(SIZES)}.png", folder / f"im{i}.png")
        color = colors[i % len(SIZES)]
        conv = [{"from": "human", "value": "<image>\nWhat color?"}, {"from": "gpt", "value": f"It is {color}."}]
        lines.append({"id": f"s{i}", "image": f"im{i}.png", "conversations": conv})
    path = folder / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def _model_config(tiny_base) -> ModelConfig:
    return ModelConfig(
        vision=VisionConfig(name="clip", path=tiny_base["vision"], anyres=GRIDS),
        projector=ProjectorConfig("mlp2x-gelu"),
        llm=LlmConfig(path=tiny_base["llm"]),
    )


def test_anyres_cache_holds_every_tile_and_gives_the_pixel_inputs(tmp_path, tiny_base):
    from scitune.data.feature_store import FeatureStore
    from scitune.train.feature_cache import build_vision_side, model_feature_identity

    data = _records(tmp_path / "data")
    model, processor = build(_model_config(tiny_base))
    manifest = build_feature_cache((model, processor), data, tmp_path / "cache", batch_size=4, progress=False)
    assert manifest["images"] == len(SIZES)  # 12 files, 6 distinct contents
    store = FeatureStore(tmp_path / "cache", model_feature_identity(model, processor))
    # the encoder-only build (`scitune data cache-features`) writes the same cache
    only = build_feature_cache(
        None, data, tmp_path / "c2", batch_size=5, progress=False, vision=build_vision_side(_model_config(tiny_base))
    )
    assert only["grids"] == manifest["grids"] and only["identity"] == manifest["identity"]
    samples, report = validate_file(data, processor, max_length=256)
    assert report.ok
    from_pixels = SupervisedDataset(samples, processor.images)
    from_cache = SupervisedDataset(samples, processor.images, store)
    for i in range(len(samples)):
        px, fc = from_pixels[i], from_cache[i]
        assert torch.equal(px["image_grids"], fc["image_grids"])
        assert fc["image_features"].shape[0] == px["pixel_values"].shape[0]  # overview + tiles
        with torch.no_grad():
            assert torch.allclose(model.vision(px["pixel_values"]), fc["image_features"], atol=1e-6)
    items = [from_cache[i] for i in range(4)]
    batch = collate(items, processor.pad_token_id)
    pix = collate([from_pixels[i] for i in range(4)], processor.pad_token_id)
    with torch.no_grad():
        want = model.embed(pix["input_ids"], pix["pixel_values"], image_grids=pix["image_grids"])
        got = model.embed(batch["input_ids"], image_features=batch["image_features"], image_grids=batch["image_grids"])
    assert torch.allclose(want, got, atol=1e-6)


def test_cached_anyres_features_give_the_same_align_losses(tmp_path, tiny_base, fresh_accelerate_state):
    from scitune.train.loop import train

    data = _records(tmp_path / "data")
    build_feature_cache(build(_model_config(tiny_base)), data, tmp_path / "cache", progress=False)

    def run(name: str, **data_opts) -> list[float]:
        cfg = tiny_run_config(tiny_base, data, tmp_path / name, vision={"anyres": GRIDS}, data=data_opts, epochs=2)
        return train(cfg).losses

    plain = run("plain")
    cached = run("cached", feature_cache=str(tmp_path / "cache"))
    packed = run("packed", feature_cache=str(tmp_path / "cache"), packing=True)
    assert len(plain) == 6 and plain[-1] < plain[0]
    assert max(abs(a - b) for a, b in zip(plain, cached)) < 1e-6
    assert max(abs(a - b) for a, b in zip(plain, packed)) < 1e-5
