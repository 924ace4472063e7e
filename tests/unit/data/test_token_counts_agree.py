"""`scitune data validate`, `scitune data stats` and training count a sample's tokens the same way (through the
checkpoint's processor), image tokens included, AnyRes and <im_start>/<im_end> too."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from scitune.cli import main
from scitune.config.schema import DataConfig, RunConfig, TrainConfig
from scitune.loader import load, save_checkpoint, tiny_vlm
from scitune.train.batches import load_data

SIZES = [(32, 32), (64, 32), (32, 64), (50, 50), (100, 30)]


def _records(folder):
    folder.mkdir(parents=True)
    lines = []
    for i, size in enumerate(SIZES):
        Image.new("RGB", size, (40 * i, 90, 200)).save(folder / f"im{i}.png")
        conv = [
            {"from": "human", "value": "<image>\nWhat is shown?" + " And?" * i},
            {"from": "gpt", "value": "A figure." + " More." * i},
        ]
        lines.append(json.dumps({"id": f"s{i}", "image": f"im{i}.png", "conversations": conv}))
    (folder / "data.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "data.jsonl"


@pytest.mark.parametrize("kind", ["fixed", "anyres", "start-end"])
def test_validate_stats_and_training_agree(kind, tmp_path, capsys, fresh_accelerate_state):
    opts = {"anyres": {"anyres": ["1x1", "1x2", "2x1", "2x2"]}, "start-end": {"start_end": True}}.get(kind, {})
    ck = save_checkpoint(*tiny_vlm(**opts), tmp_path / "ck")
    data = _records(tmp_path / "data")
    model, processor = load(ck)
    cfg = RunConfig(data=DataConfig(train=str(data), max_length=4096), train=TrainConfig(out_dir=str(tmp_path / "r")))
    dataset = load_data(cfg, model, processor, tmp_path / "r", True)
    lengths = [len(dataset[i]["input_ids"]) for i in range(len(dataset))]  # what training feeds the model
    # the lengths --data.group_by_length sorts by: exact counts, or upper bounds where validation did not tokenize
    assert all(estimate >= n for estimate, n in zip(dataset.lengths, lengths))
    assert len(set(lengths)) == len(SIZES)
    if kind == "anyres":  # the counts follow each image's grid
        assert len({processor.image_tokens(s) for s in SIZES}) > 1

    capsys.readouterr()
    assert main(["data", "stats", "--data", str(data), "--out", str(tmp_path / "st"), "--checkpoint", str(ck)]) == 0
    stats = json.loads(capsys.readouterr().out)["length"]
    assert (stats["min"], stats["max"], stats["mean"]) == (min(lengths), max(lengths), round(sum(lengths) / 5, 2))

    argv = ["data", "validate", "--data", str(data), "--checkpoint", str(ck), "--max_length"]
    assert main([*argv, str(max(lengths))]) == 0  # every sample fits exactly
    capsys.readouterr()
    assert main([*argv, str(max(lengths) - 1)]) == 1  # the longest is one token over: the same count
    out = capsys.readouterr().out
    longest = lengths.index(max(lengths))
    assert f"[id=s{longest}]: sample is {max(lengths)} tokens" in out and "1 bad" in out
