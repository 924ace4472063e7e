"""Bad records are all reported (file, line, id, problem) before training; skipping writes their ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import text_processor
from scitune.data.dataset import validate_file
from scitune.model.builders import tiny_tokenizer


def _rec(rid, image="ok.png", conv=None):
    conv = conv or [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A plot."}]
    return {"id": rid, "image": image, "conversations": conv}


@pytest.fixture
def bad_file(tmp_path) -> Path:
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(tmp_path / "ok.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    lines = [
        json.dumps(_rec("good")),
        json.dumps(_rec("missing-image", image="nope.png")),
        json.dumps(_rec("corrupt-image", image="corrupt.png")),
        '{"id": "broken", "conversations": [',
        json.dumps({"id": "no-conv", "image": None}),
        json.dumps(_rec("two-humans", conv=[{"from": "human", "value": "<image> a"}, {"from": "human", "value": "b"}])),
        json.dumps(
            _rec("count", conv=[{"from": "human", "value": "<image> <image> a"}, {"from": "gpt", "value": "b"}])
        ),
        json.dumps(
            _rec(
                "too-long", conv=[{"from": "human", "value": "<image> " + "word " * 300}, {"from": "gpt", "value": "b"}]
            )
        ),
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_every_problem_is_reported_with_location(bad_file):
    samples, report = validate_file(bad_file, text_processor(tiny_tokenizer(), "scitune", 16), max_length=128)
    assert [s.id for s in samples] == ["good"]
    by_id = {p.record_id if p.record_id != "?" else p.location.split(":")[-1]: str(p) for p in report.problems}
    assert "image not found" in by_id["missing-image"] and "nope.png" in by_id["missing-image"]
    assert "cannot read image" in by_id["corrupt-image"] and "corrupt.png" in by_id["corrupt-image"]
    assert "malformed JSON line" in by_id["4"] and f"{bad_file}:4" in by_id["4"]
    assert "no 'conversations'" in by_id["no-conv"]
    assert "alternate" in by_id["two-humans"]
    assert "2 <image> placeholder(s) but 1 image(s)" in by_id["count"]
    assert "over the context --data.max_length=128" in by_id["too-long"] and "nothing is cut" in by_id["too-long"]
    assert f"{bad_file}:2" in by_id["missing-image"]
    assert report.total == 8 and len(report.problems) == 7


def test_llava_json_list_files_are_read_as_is(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(tmp_path / "ok.png")
    (tmp_path / "llava.json").write_text(json.dumps([_rec("a"), _rec("b")], indent=2))
    samples, report = validate_file(tmp_path / "llava.json", text_processor(tiny_tokenizer(), "scitune", 4))
    assert report.ok and [s.id for s in samples] == ["a", "b"]


def _cfg(tmp_path, base, data, **data_opts):
    cfg = {
        "model": {"vision": {"name": "clip", "path": base["vision"]}, "llm": {"path": base["llm"]}},
        "data": {"train": str(data), "max_length": 128, **data_opts},
        "train": {
            "stage": "align",
            "epochs": 1,
            "global_batch_size": 1,
            "micro_batch_size": 1,
            "out_dir": str(tmp_path / "run"),
            "progress": False,
        },
    }
    p = tmp_path / "cfg.yaml"
    p.write_text(json.dumps(cfg))
    return p


def test_training_stops_before_step_one_with_full_report(tmp_path, tiny_base, bad_file):
    from scitune.cli import main

    code = main(["train", "--config", str(_cfg(tmp_path, tiny_base, bad_file))])
    assert code == 2
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    assert not (tmp_path / "run" / "final").exists()


def test_skip_bad_samples_trains_on_the_rest_and_writes_skipped_ids(tmp_path, tiny_base, bad_file, capsys):
    from scitune.cli import main

    code = main(["train", "--config", str(_cfg(tmp_path, tiny_base, bad_file, skip_bad_samples=True))])
    assert code == 0
    skipped = [json.loads(x) for x in (tmp_path / "run" / "skipped.jsonl").read_text().splitlines()]
    assert {s["record_id"] for s in skipped} >= {"missing-image", "corrupt-image", "no-conv", "too-long"}
    assert len(skipped) == 7
    assert (tmp_path / "run" / "final" / "scitune.json").is_file()
