"""`scitune data stats`: counts, images, turns, missing fields, lengths (words / tokens / training tokens), PNG."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from conftest import text_processor
from scitune.data.stats import (
    compute_stats,
    plot_length_histogram,
    processor_length,
    tokenizer_length,
    word_length,
    write_stats,
)
from scitune.io import DataError
from scitune.model.builders import tiny_tokenizer

RECORDS = [
    {"id": "a", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nWhat is shown?"},
                                                    {"from": "gpt", "value": "A red square."}],
     "meta": {"source": "scicap"}},
    {"id": "b", "image": "gone.png", "conversations": [{"from": "human", "value": "<image> Describe it."},
                                                       {"from": "gpt", "value": "Blue."},
                                                       {"from": "human", "value": "More?"},
                                                       {"from": "gpt", "value": "No more to say."}]},
    {"id": "c", "conversations": [{"from": "human", "value": "Hi there"}, {"from": "gpt", "value": ""}]},
    {"image": None, "conversations": [{"from": "human", "value": "only a question"}]},
    {"id": "e", "image": ["a.png", "a.png"], "conversations": []},
]  # fmt: skip


@pytest.fixture
def data(tmp_path):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS) + "{broken\n", encoding="utf-8")
    return path


def test_counts(data):
    stats, lengths = compute_stats(data)
    assert stats["records"] == 5 and stats["malformed_lines"] == 1
    assert stats["with_image"] == 3 and stats["text_only"] == 2 and stats["images"] == 4
    assert stats["image_files_missing"] == 1  # gone.png
    assert stats["turns"]["per_record"] == {"0": 1, "1": 1, "2": 2, "4": 1}
    assert stats["turns"]["total"] == 9 and stats["turns"]["max"] == 4
    assert stats["missing_fields"] == {"id": 1, "conversations": 1, "gpt_turn": 1, "turn_value": 1}
    assert stats["sources"] == {"none": 4, "scicap": 1}
    # words: 'What is shown?' 3 + '<image>' 1 + 'A red square.' 3; b: 3 + 1 + 1 + 4; c: 2 + 0 (no-gpt d and empty e
    # have no valid structure: no length)
    assert lengths == [7, 9, 2] and stats["invalid"] == 2
    assert stats["length"] == {"count": 3, "min": 2, "mean": 6.0, "median": 7.0, "p95": 8.8, "max": 9}


def test_token_lengths(tmp_path, data):
    tok = tiny_tokenizer()
    tok.save_pretrained(tmp_path / "ckpt" / "tokenizer")
    rec = RECORDS[0]
    by_tokens = tokenizer_length(tmp_path / "ckpt" / "tokenizer")(rec)
    texts = ["\nWhat is shown?", "A red square."]
    assert by_tokens == sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    lengths = {}
    for n in (1, 5):
        lengths[n] = processor_length(text_processor(tok, "scitune", n), data.parent)(rec)
    assert lengths[5] - lengths[1] == 4  # each image counts as its image tokens
    assert lengths[1] > by_tokens  # the template (system message, role names) is counted too
    assert word_length(rec) == 7


def test_write_stats_and_histogram(tmp_path, data):
    stats = write_stats(str(data), str(tmp_path / "out"))
    assert stats["length"]["unit"] == "words"
    assert json.loads((tmp_path / "out" / "stats.json").read_text()) == stats
    with Image.open(tmp_path / "out" / "length_histogram.png") as im:
        assert im.format == "PNG" and im.size == (600, 360)
    plot_length_histogram([], tmp_path / "empty.png")  # an empty file still gets a picture
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "empty.png", "out", "train.jsonl"]  # no temp files
    with pytest.raises(DataError, match="data file not found"):
        compute_stats(tmp_path / "nope.jsonl")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(json.dumps(RECORDS[0]).encode() + b"\n" + '{"id": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.jsonl:2: not UTF-8 text \(byte 0xe9"):
        compute_stats(latin)
