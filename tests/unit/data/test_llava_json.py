"""LLaVA JSON / ShareGPT: import either layout to canonical records, export to either, round trips, bad input."""

from __future__ import annotations

import json

import pytest

from scitune.data.conversation import record_messages
from scitune.io import DataError
from scitune.sources.converters import CONVERTERS
from scitune.sources.converters.llava_json import (
    LlavaJsonConverter,
    export_conversations,
    export_file,
    import_conversations,
    normalize_conversation,
)
from scitune.sources.converters.sharegpt import ShareGPTConverter

LLAVA = [  # LLaVA's own layout: text-only records have no "image" key
    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg", "conversations": [
        {"from": "human", "value": "What are the colors of the bus in the image?\n<image>"},
        {"from": "gpt", "value": "The bus in the image is white and red."},
        {"from": "human", "value": "What feature can be seen on the back of the bus?"},
        {"from": "gpt", "value": "The back of the bus features an advertisement."}]},
    {"id": "i6IyJda_0", "conversations": [
        {"from": "human", "value": "How to tell if a customer segment is well segmented?"},
        {"from": "gpt", "value": "1. Homogeneity: similar needs.\n2. Distinctiveness."}]},
]  # fmt: skip
SHAREGPT = [  # ShareGPT as LLaMA-Factory and FastChat write it: system turn, "images" list, various speakers
    {"id": "sg-1", "conversations": [
        {"from": "system", "value": "You are a figure expert."},
        {"from": "human", "value": "<image>Which type of figure is this?"},
        {"from": "gpt", "value": "A bar chart."}], "images": ["figs/bar.png"]},
    {"conversations": [{"from": "user", "value": "Hi"}, {"from": "chatgpt", "value": "Hello!"}], "lang": "en"},
    {"id": "sg-3", "messages": [{"role": "user", "content": "Compare <image> and <image>."},
                                {"role": "assistant", "content": "The first is larger."}],
     "images": ["a.png", "b.png"]},
]  # fmt: skip


def _located(records, name="data.json"):
    return [(f"{name}: record #{i}", r) for i, r in enumerate(records)]


def test_llava_records_import_as_is_and_export_back_unchanged(tmp_path):
    records, report = import_conversations(_located(LLAVA))
    assert [r["id"] for r in records] == ["000000033471", "i6IyJda_0"]
    assert records[0]["image"] == "coco/train2017/000000033471.jpg" and records[1]["image"] is None
    assert records[0]["conversations"] == LLAVA[0]["conversations"] and records[0]["meta"] == {"source": "llava-json"}
    assert report["with_image"] == 1 and report["text_only"] == 1 and report["images"] == 1
    assert report["no_id"] == report["added_image_token"] == report["not_alternating"] == 0
    assert export_conversations(records, "llava-json") == LLAVA  # the round trip is exact
    for rec in records:
        record_messages(rec)  # what training reads: structurally valid


def test_sharegpt_import():
    records, report = import_conversations(_located(SHAREGPT), source="sharegpt")
    first, second, third = records
    assert first["system"] == "You are a figure expert." and first["image"] == "figs/bar.png"
    assert [t["from"] for t in first["conversations"]] == ["human", "gpt"]
    assert second["id"] == "sharegpt-1" and second["image"] is None  # a generated id, reported
    assert second["conversations"] == [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]
    assert second["meta"] == {"source": "sharegpt", "extra": {"lang": "en"}}
    assert third["image"] == ["a.png", "b.png"] and third["conversations"][0]["value"] == "Compare <image> and <image>."
    assert report["no_id_ids"] == ["sharegpt-1"] and report["images"] == 3 and report["with_image"] == 2
    messages = record_messages(first)
    assert messages[0].role == "system" and messages[0].content == "You are a figure expert."


def test_round_trips_through_both_layouts():
    canonical, _ = import_conversations(_located(SHAREGPT), source="sharegpt")
    for fmt in ("sharegpt", "llava-json"):
        exported = export_conversations(canonical, fmt, with_meta=True)
        again, _ = import_conversations(_located(json.loads(json.dumps(exported))))
        assert again == canonical, fmt
    sharegpt = export_conversations(canonical, "sharegpt")
    assert sharegpt[0] == {"id": "sg-1", "conversations": SHAREGPT[0]["conversations"], "images": ["figs/bar.png"]}
    assert "images" not in sharegpt[1] and sharegpt[2]["images"] == ["a.png", "b.png"]
    llava = export_conversations(canonical, "llava-json")
    assert llava[0]["image"] == "figs/bar.png" and llava[0]["system"] == "You are a figure expert."
    assert "image" not in llava[1] and "meta" not in llava[0]


def test_image_token_added_where_llava_puts_it():
    raw = {"id": "x", "image": "a.png", "conversations": [{"from": "human", "value": "What is it?"},
                                                          {"from": "gpt", "value": "A cat."}]}  # fmt: skip
    record, notes = normalize_conversation(raw, "f", "0")
    assert record["conversations"][0]["value"] == "<image>\nWhat is it?" and notes == ["added_image_token"]
    with pytest.raises(DataError, match=r"f \(id 'x'\): 0 <image> placeholder\(s\) but 1 image"):
        normalize_conversation(raw, "f", "0", add_image_token=False)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([1, 2], "expected a JSON object, got list"),
        ({"id": "a"}, "needs a non-empty 'conversations'"),
        ({"id": "a", "conversations": [{"from": "human"}]}, "turn 0 needs a string 'value'"),
        ({"id": "a", "conversations": [{"from": "robot", "value": "x"}]}, "unsupported role 'robot'"),
        ({"id": "a", "conversations": [{"from": "human", "value": "x"}, {"from": "system", "value": "s"}]},
         "only the first turn may be one"),
        ({"id": "a", "image": "i.png", "conversations": [{"from": "human", "value": "<image><image>x"}]},
         "2 <image> placeholder"),
        ({"id": "a", "conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "<image>"}]},
         "assistant \\(gpt\\) turn contains <image>"),
        ({"id": "a", "image": 3, "conversations": [{"from": "human", "value": "x"}]}, "'image' must be a path"),
        ({"id": "a", "image": "x.png", "images": ["y.png"], "conversations": [{"from": "human", "value": "<image>"}]},
         "'image' and 'images' disagree"),
    ],
)  # fmt: skip
def test_bad_records_name_file_and_record(raw, message):
    with pytest.raises(DataError, match=r"data\.json: record #1.*" + message):
        import_conversations(_located([LLAVA[1], raw]))


def test_non_alternating_turns_and_duplicates_are_reported(caplog):
    raw = {"id": "i6IyJda_0", "conversations": [{"from": "gpt", "value": "Hello"}, {"from": "human", "value": "Hi"}]}
    _, report = import_conversations(_located([LLAVA[1], raw]))
    assert report["not_alternating_ids"] == ["i6IyJda_0"] and report["duplicate_ids"] == ["i6IyJda_0"]
    assert "not_alternating" in caplog.text


def test_converters_and_export_write_atomically(tmp_path):
    src = tmp_path / "sharegpt.json"
    src.write_text(json.dumps(SHAREGPT), encoding="utf-8")
    out = tmp_path / "out" / "chat.jsonl"
    summary = ShareGPTConverter().run(str(src), str(out))
    assert summary["records"] == 3 and summary["converter"] == "sharegpt"
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert lines == import_conversations(_located(SHAREGPT), source="sharegpt")[0]
    exported = tmp_path / "llava.json"
    export_file(str(out), str(exported), "llava-json")
    assert json.loads(exported.read_text(encoding="utf-8"))[1] == {"id": "sharegpt-1", "conversations": [
        {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}  # fmt: skip
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([*LLAVA, {"id": "z", "conversations": []}]), encoding="utf-8")
    before = out.read_bytes()
    with pytest.raises(DataError, match=r"bad\.json: record #2 \(id 'z'\)"):
        LlavaJsonConverter().run(str(bad), str(out))
    assert out.read_bytes() == before  # the old output is untouched
    assert sorted(p.name for p in out.parent.iterdir()) == ["chat.jsonl"]  # and no temporary file is left
    with pytest.raises(ValueError, match="known: llava-json, sharegpt"):
        export_file(str(src), str(tmp_path / "x.json"), "alpaca")


def test_registered():
    assert CONVERTERS.get("llava-json") is LlavaJsonConverter and CONVERTERS.get("sharegpt") is ShareGPTConverter
