"""Bad input to every converter: a DataError naming file and record, and never a half-written output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scitune.io import DataError
from scitune.sources.converters import CONVERTERS
from scitune.sources.converters.scienceqa import ScienceQAConverter

OLD = b"previous output\n"
GOOD = {  # converter -> (file name, a valid record list / object)
    "alpaca": ("alpaca_data.json", [{"instruction": "Hi", "input": "", "output": "Hello"}]),
    "openorca": ("orca.jsonl", [{"id": "a", "system_prompt": "", "question": "Hi", "response": "Hello"}]),
    "caption-pairs": ("pairs.tsv", "Hi, a dog on grass.\thttps://example.invalid/1.jpg\n"),
    "scicap": ("figs.jsonl", [{"id": "f1", "image": "f1.png", "caption": "A plot."}]),
    "llava-json": ("llava.json", [{"id": "a", "conversations": [{"from": "human", "value": "Hi"},
                                                               {"from": "gpt", "value": "Hello"}]}]),
    "sharegpt": ("sharegpt.jsonl", [{"id": "a", "conversations": [{"from": "human", "value": "Hi"},
                                                                 {"from": "gpt", "value": "Hello"}]}]),
    "vistext": ("data_test.json", [{"caption_id": "1-0", "img_id": 1, "caption_L1": "A bar chart.",
                                    "caption_L2L3": "It rises."}]),
    "scienceqa": ("problems.json", {"1": {"question": "Which is a mammal?", "choices": ["ant", "cow"], "answer": 1,
                                          "hint": "", "image": None, "lecture": "L.", "solution": "S."}}),
    "karpathy": ("dataset_coco.json", {"images": [{"filepath": "train2014", "filename": "a.jpg", "split": "train",
                                                   "sentences": [{"raw": "Hi, a dog."}], "cocoid": 1}]}),
    "nocaps": ("nocaps_val_4500_captions.json", {"images": [{"id": 0, "file_name": "a.jpg", "domain": "in-domain"}],
                                                 "annotations": [{"image_id": 0, "id": 0, "caption": "Hi, a dog."}]}),
    "llava-pretrain": ("chat.json", [{"id": "a", "image": "a.jpg", "conversations": [
        {"from": "human", "value": "Hi\n<image>"}, {"from": "gpt", "value": "a dog"}]}]),
}  # fmt: skip


def _write(path: Path, obj) -> Path:
    if isinstance(obj, str):  # a text source (caption-pairs TSV) as it is
        path.write_text(obj, encoding="utf-8")
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in obj), encoding="utf-8")
    else:
        path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def _source(name: str, folder: Path) -> Path:
    file_name, obj = GOOD[name]
    path = _write(folder / file_name, obj)
    if name == "scienceqa":
        _write(folder / "pid_splits.json", {"train": ["1"]})
    return path


def _run(name: str, src: Path, out: Path, **kwargs):
    if name == "vistext":
        kwargs.setdefault("check_images", False)
    if name == "caption-pairs":  # no spaCy model needed; every phrase kept
        kwargs.update(extractor="words", min_count=1)
    return CONVERTERS.get(name)().run(src=str(src), out=str(out), **kwargs)


def _untouched(out: Path) -> None:
    assert out.read_bytes() == OLD
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary file left behind


@pytest.fixture
def out(tmp_path) -> Path:
    path = tmp_path / "out" / "records.jsonl"
    path.parent.mkdir()
    path.write_bytes(OLD)
    return path


def test_every_converter_is_covered():
    assert set(GOOD) == set(CONVERTERS.names())


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_source_converts(name, tmp_path, out):
    assert _run(name, _source(name, tmp_path), out)["records"] == 1
    assert len(out.read_text(encoding="utf-8").splitlines()) == 1


@pytest.mark.parametrize("name", sorted(GOOD))
def test_missing_file(name, tmp_path, out):
    missing = tmp_path / GOOD[name][0]
    with pytest.raises(DataError, match=f"{missing.name}: (source )?file not found"):
        _run(name, missing, out)
    _untouched(out)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_non_utf8_text_names_file_and_line(name, tmp_path, out):
    src = _source(name, tmp_path)
    data = src.read_bytes()
    at = data.index(b"A" if name in ("scicap", "vistext") else (b"Hi" if name != "scienceqa" else b"Which"))
    src.write_bytes(data[:at] + "\u00e9".encode("latin-1") + data[at:])  # a Latin-1 'é' inside the text
    line = data[:at].count(b"\n") + 1
    with pytest.raises(DataError, match=rf"{src.name}:{line}: not UTF-8 text \(byte 0xe9 at offset {at}\)"):
        _run(name, src, out)
    _untouched(out)


@pytest.mark.parametrize(
    ("name", "obj", "message"),
    [
        ("scicap", [{"id": "f1", "caption": 3}], r"figs\.jsonl:1 \(id 'f1'\): field 'caption' must be a string"),
        ("llava-json", {"id": "a"}, r"llava\.json: record #0 \(id 'a'\): needs a non-empty 'conversations'"),
        ("sharegpt", [{"id": "b", "conversations": [{"from": "human", "value": 1}]}],
         r"sharegpt\.jsonl:1 \(id 'b'\): turn 0 needs a string 'value'"),
        ("vistext", [{"caption_id": "1-0", "img_id": 1}], r"record #0 \(caption_id '1-0'\): missing field"),
        ("scienceqa", {"1": {"question": "Q", "choices": "ab"}}, r"problems\.json: problem '1': field"),
        ("scienceqa", [1, 2], r"problems\.json: expected a JSON object pid -> problem"),
    ],
)  # fmt: skip
def test_wrong_schema(name, obj, message, tmp_path, out):
    src = _source(name, tmp_path)
    _write(src, obj)
    with pytest.raises(DataError, match=message):
        _run(name, src, out)
    _untouched(out)


def test_a_late_bad_record_leaves_no_half_file(tmp_path, out):
    figs = [{"id": f"f{i}", "image": f"f{i}.png", "caption": f"Plot {i}."} for i in range(50)]
    src = _write(tmp_path / "figs.jsonl", [*figs, {"id": "bad", "caption": None}])
    with pytest.raises(DataError, match=r"figs\.jsonl:51 \(id 'bad'\): caption is null"):
        _run("scicap", src, out)
    _untouched(out)
    fresh = out.parent / "fresh.jsonl"
    with pytest.raises(DataError):
        _run("scicap", src, fresh)
    assert not fresh.exists()


def test_unknown_prompt_format(tmp_path, out):
    with pytest.raises(ValueError, match=r"QCM-XYZ.*LEPA"):
        ScienceQAConverter().run(str(_source("scienceqa", tmp_path)), str(out), prompt_format="QCM-XYZ")
    _untouched(out)


def test_pid_without_its_image(tmp_path, out):
    src = _source("scienceqa", tmp_path)
    problems = json.loads(src.read_text())
    problems["2"] = {**problems["1"], "image": "image.png"}
    _write(src, problems)
    _write(tmp_path / "pid_splits.json", {"train": ["1", "2"]})
    images = tmp_path / "images"
    (images / "2").mkdir(parents=True)
    with pytest.raises(DataError, match=r"problems\.json: problem '2': image .*2/image\.png not found"):
        ScienceQAConverter().run(str(src), str(out), image_root=str(images))
    _untouched(out)
    (images / "2" / "image.png").write_bytes(b"png")
    assert ScienceQAConverter().run(str(src), str(out), image_root=str(images))["with_image"] == 1
