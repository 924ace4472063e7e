"""VisText converter on hand-written records in VisText's released layout (data_<split>.json + images/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from scitune.io import DataError
from scitune.sources.converters import CONVERTERS
from scitune.sources.converters.vistext import VisTextConverter, convert_vistext, load_vistext

CHARTS = [  # the fields of VisText's data_test.json (scenegraph and datatable shortened)
    {"caption_id": "9-0", "img_id": 9, "scenegraph": "title Annual revenue x-axis Year y-axis Revenue ...",
     "datatable": "Year | Revenue 2017 | 12.5 2018 | 14.1", "L1_properties": ["bar", "Annual revenue", "Year",
     "Revenue", "linear", "linear"],
     "caption_L1": "This is a bar chart titled Annual revenue. The x-axis shows Year. ",
     "caption_L2L3": " Revenue rose every year, peaking in 2018."},
    {"caption_id": "17-1", "img_id": 17, "scenegraph": "...", "datatable": "...", "L1_properties": ["line", "Deaths",
     "Month", "Count", "linear", "linear"], "caption_L1": "A line chart of deaths by month.", "caption_L2L3": ""},
]  # fmt: skip


@pytest.fixture
def vistext_dir(tmp_path) -> Path:
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    for chart in CHARTS:
        Image.new("RGB", (40, 30), "white").save(root / "images" / f"{chart['img_id']}.png")
    (root / "data_test.json").write_text(json.dumps(CHARTS), encoding="utf-8")
    return root


def test_levels(vistext_dir, caplog):
    folder, located = load_vistext(vistext_dir, "test")
    assert folder == vistext_dir and len(located) == 2
    records, report = convert_vistext(located, "L2L3", image_root=folder)
    first = records[0]
    assert first["id"] == "9-0" and first["image"] == "images/9.png"
    assert first["conversations"] == [
        {"from": "human", "value": "<image>\nWrite a caption for this chart."},
        {"from": "gpt", "value": "Revenue rose every year, peaking in 2018."},
    ]
    assert first["meta"]["L1_properties"][0] == "bar" and first["meta"]["img_id"] == 9
    assert report["empty_ids"] == ["17-1"] and records[1]["conversations"][1]["value"] == ""  # kept and reported
    assert "empty" in caplog.text
    l1 = convert_vistext(located, "L1", prompt="Describe the chart.")[0]
    assert l1[0]["conversations"][1]["value"] == "This is a bar chart titled Annual revenue. The x-axis shows Year."
    assert l1[0]["conversations"][0]["value"] == "<image>\nDescribe the chart."
    joined = convert_vistext(located, "L1L2L3")[0][0]["conversations"][1]["value"]
    assert joined == (
        "This is a bar chart titled Annual revenue. The x-axis shows Year. Revenue rose every year, peaking in 2018."
    )
    both, report = convert_vistext(located, "both", drop_empty=True)
    assert [r["id"] for r in both] == ["9-0_L1", "9-0_L2L3", "17-1_L1"] and report["dropped"] == 1
    with pytest.raises(ValueError, match="known: L1, L2L3, L1L2L3, both"):
        convert_vistext(located, "L3")


def test_run_writes_records_and_checks_images(vistext_dir, tmp_path):
    out = tmp_path / "vistext_test.jsonl"
    summary = CONVERTERS.get("vistext")().run(str(vistext_dir), str(out), level="L1")
    assert summary["records"] == 2 and summary["image_root"] == str(vistext_dir)
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in lines] == ["9-0", "17-1"] and all((vistext_dir / r["image"]).is_file() for r in lines)
    (vistext_dir / "images" / "17.png").unlink()
    out2 = tmp_path / "again.jsonl"
    with pytest.raises(DataError, match=r"data_test\.json: record #1 \(caption_id '17-1'\): chart image .*17\.png"):
        VisTextConverter().run(str(vistext_dir / "data_test.json"), str(out2))
    assert not out2.exists()  # nothing half-written
    assert VisTextConverter().run(str(vistext_dir), str(out2), check_images=False)["records"] == 2


def test_bad_input(tmp_path, vistext_dir):
    with pytest.raises(DataError, match=r"data_validation\.json: file not found"):
        load_vistext(vistext_dir, "val")
    with pytest.raises(ValueError, match="unknown VisText split 'dev'"):
        load_vistext(vistext_dir, "dev")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([CHARTS[0], {"caption_id": "3-0", "img_id": 3, "caption_L1": "x"}]), encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.json: record #1 \(caption_id '3-0'\): missing field 'caption_L2L3'"):
        load_vistext(bad)
    bad.write_text(json.dumps({"charts": CHARTS}), encoding="utf-8")
    with pytest.raises(DataError, match="expected VisText's JSON list"):
        load_vistext(bad)
    bad.write_text(json.dumps([{**CHARTS[0], "caption_L1": None}]), encoding="utf-8")
    with pytest.raises(DataError, match=r"record #0 .*'caption_L1' must be a string"):
        load_vistext(bad)
