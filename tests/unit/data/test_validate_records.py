"""Fast validation: the same report as the per-record check, a verdict cached by what decides it (and never trusted
when damaged), and a lazy dataset that gives training the same items and reports records that changed."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import make_color_records, text_processor
from scitune.data import validated as validated_module
from scitune.data.dataset import ImageCheck, SupervisedDataset, validate_file
from scitune.data.record_check import RecordChecker
from scitune.data.validated import lazy_dataset, validate_records
from scitune.data.validation_cache import entry_path
from scitune.loader import tiny_vlm
from scitune.model.builders import tiny_tokenizer


def _rec(rid, image="ok.png", question="<image>\nWhat is it?", answer="A plot."):
    return {
        "id": rid,
        "image": image,
        "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
    }


@pytest.fixture
def bad_file(tmp_path) -> Path:
    Image.new("RGB", (8, 8), "red").save(tmp_path / "ok.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    good = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])  # a truncated file: its header is fine
    lines = [
        json.dumps(_rec("good")),
        json.dumps(_rec("missing-image", image="nope.png")),
        json.dumps(_rec("corrupt-image", image="corrupt.png")),
        json.dumps(_rec("truncated-image", image="cut.png")),
        '{"id": "broken", "conversations": [',
        "",
        json.dumps({"id": "no-conv", "image": None}),
        json.dumps(_rec("outside", image="../x.png")),
        json.dumps(_rec("count", question="<image> <image> a")),
        json.dumps(_rec("in-answer", answer="<image> b")),
        json.dumps(_rec("too-long", question="<image> " + "word " * 300)),
        json.dumps(_rec("good-2", image=["ok.png", "ok.png"], question="<image><image> two")),
        "[1, 2]",
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _processor(template="scitune"):
    return text_processor(tiny_tokenizer(), template, 16)


def test_every_problem_reads_as_the_per_record_check_reports_it(bad_file):
    processor = _processor()
    samples, old = validate_file(bad_file, processor, max_length=128)
    new = validate_records(bad_file, processor, max_length=128, cache="off")
    assert [str(p) for p in new.report.problems] == [str(p) for p in old.problems]
    assert new.report.total == old.total == 12 and len(new) == len(samples) == 2
    by_id = {p.record_id: p.message for p in new.report.problems}
    assert f"{bad_file}:4 [id=truncated-image]" in str(new.report.problems[2]) and "cut.png" in by_id["truncated-image"]
    assert "over the context --data.max_length=128" in by_id["too-long"]
    assert [int(n) for n in new.numbers] == [1, 12]  # lines of the usable records
    assert new.lengths.tolist()[0] >= len(samples[0].encoded)


def test_a_json_list_with_a_malformed_element_reports_it_and_reads_on(tmp_path):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "ok.png")
    text = json.dumps([_rec(f"r{i}") for i in range(4)], indent=2).replace('"id": "r1"', '"id": "r1",,', 1)
    path = tmp_path / "llava.json"
    path.write_text(text)
    result = validate_records(path, _processor(), cache="off")
    (problem,) = result.report.problems
    line = text[: text.index(",,")].count("\n") + 1
    assert problem.location.startswith(f"{path}:{line}:") and "malformed JSON" in problem.message
    assert "record #1" in problem.message and "read on from line" in problem.message
    assert result.report.total == 4 and result.numbers.tolist() == [0, 2, 3]  # record numbers: the list's indices
    reader = lazy_dataset(result, _processor(), None, 2048)
    assert [reader.samples[i].id for i in range(3)] == ["r0", "r2", "r3"]


def test_a_compact_list_cannot_be_resynced_and_says_so(tmp_path):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "ok.png")
    path = tmp_path / "llava.json"
    path.write_text(json.dumps([_rec("r0"), _rec("r1")]).replace('"id": "r1"', '"id": "r1",,'))
    result = validate_records(path, _processor(), cache="off")
    assert "nothing after it was read" in result.report.problems[0].message and len(result) == 1


def test_the_verdict_is_cached_and_a_second_launch_does_not_validate(color_data, monkeypatch):
    processor = _processor()
    first = validate_records(color_data, processor, max_length=512)
    assert not first.from_cache and len(first) == 16 and entry_path_exists()

    def refuse(*args, **kwargs):
        raise AssertionError("validated again")

    monkeypatch.setattr(RecordChecker, "check", refuse)
    monkeypatch.setattr("scitune.data.records.RecordFile.scan", refuse)  # not even the file is parsed
    second = validate_records(color_data, processor, max_length=512)
    assert second.from_cache and second.summary().startswith("checked 16 records read from the cache")
    for name in ("starts", "ends", "numbers", "lengths", "exact"):
        assert getattr(second, name).tolist() == getattr(first, name).tolist()
    assert second.report.summary() == first.report.summary()


def entry_path_exists() -> bool:
    from scitune.fingerprint import cache_dir

    return any((cache_dir() / "validation").glob("*.npz"))


@pytest.mark.parametrize("change", ["data", "max_length", "template", "image_root", "max_pixels"])
def test_what_decides_the_verdict_is_in_its_key(change, color_data, tmp_path, monkeypatch):
    calls = []
    real = validated_module._check_all
    monkeypatch.setattr(validated_module, "_check_all", lambda *a: calls.append(1) or real(*a))
    args = {"max_length": 512, "image_root": color_data.parent, "image_check": ImageCheck()}
    validate_records(color_data, _processor(), **args)
    template = "scitune"
    if change == "data":
        lines = color_data.read_text().splitlines()
        color_data.write_text("\n".join(lines[:-1]) + "\n")
    elif change == "max_length":
        args["max_length"] = 511
    elif change == "template":
        template = "vicuna-v1"
    elif change == "max_pixels":
        args["image_check"] = ImageCheck(max_pixels=10**6)
    else:
        other = tmp_path / "elsewhere"
        other.mkdir()
        for p in color_data.parent.glob("*.png"):
            (other / p.name).write_bytes(p.read_bytes())
        args["image_root"] = other
    again = validate_records(color_data, _processor(template), **args)
    assert not again.from_cache and len(calls) == 2
    assert validate_records(color_data, _processor(template), **args).from_cache  # and now that one is cached


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign-arrays"])
def test_a_damaged_cache_entry_is_ignored_and_rebuilt(damage, color_data, caplog):
    import numpy as np

    processor = _processor()
    first = validate_records(color_data, processor, max_length=512)
    newest = max(entry_path({}).parent.glob("*.npz"), key=lambda p: p.stat().st_mtime_ns)
    if damage == "garbage":
        newest.write_bytes(b"not a zip file at all")
    elif damage == "truncated":
        newest.write_bytes(newest.read_bytes()[:200])
    else:  # a readable entry whose arrays do not fit the file: never trusted
        with np.load(newest) as z:
            parts = {k: z[k] for k in z.files}
        parts["ends"] = parts["ends"] + 10**9
        with open(newest, "wb") as f:
            np.savez(f, **parts)
    with caplog.at_level(logging.WARNING):
        again = validate_records(color_data, processor, max_length=512)
    assert not again.from_cache and "damaged validation cache entry" in caplog.text
    assert again.lengths.tolist() == first.lengths.tolist()
    assert validate_records(color_data, processor, max_length=512).from_cache  # rebuilt: sound again


def test_lazy_items_equal_the_validated_samples(color_data):
    _, processor = tiny_vlm()
    samples, report = validate_file(color_data, processor, max_length=512)
    eager = SupervisedDataset(samples, processor.images)
    lazy = lazy_dataset(validate_records(color_data, processor, max_length=512), processor, None, 512)
    assert len(lazy) == len(eager) == 16
    for i in range(16):
        a, b = lazy[i], eager[i]
        for key in ("input_ids", "labels", "pixel_values"):
            assert torch.equal(a[key], b[key]), (i, key)
    assert all(estimate >= len(s.encoded) for estimate, s in zip(lazy.lengths, samples))


def test_a_record_that_changes_after_validation_comes_back_bad(color_data):
    _, processor = tiny_vlm()
    data = lazy_dataset(validate_records(color_data, processor, max_length=512), processor, None, 512)
    (color_data.parent / "img3.png").unlink()
    bad = data[3]["bad"]
    assert bad["id"] == "r3" and "img3.png" in bad["problem"] and bad["index"] == 3
    text = color_data.read_text()
    color_data.write_text(text.replace('"id": "r5"', '"id": 55555', 1)[:-1] + " ")  # same size, r5 edited
    assert "input_ids" in data[4]
    moved = data[5]
    assert "bad" not in moved or "r5" in str(moved["bad"])  # still readable JSON: served as it is now
    color_data.write_bytes(b"x" * len(text.encode()))
    assert f"{color_data}:7" in data[6]["bad"]["problem"] and "not readable JSON" in data[6]["bad"]["problem"]


def test_training_on_the_lazy_dataset_gives_the_same_losses(tmp_path, tiny_base, monkeypatch, fresh_accelerate_state):
    from accelerate.state import AcceleratorState, GradientState

    from conftest import tiny_run_config
    from scitune.train import batches
    from scitune.train import loop as train_loop

    data = make_color_records(tmp_path / "data", n=8)
    lazy = train_loop.train(tiny_run_config(tiny_base, data, tmp_path / "lazy", "finetune", epochs=1)).losses

    def eager(cfg, model, processor, out_dir, is_main):  # what training did before: every sample encoded up front
        check = ImageCheck(cfg.data.max_image_pixels or None, cfg.data.allow_outside_root)
        samples, report = validate_file(cfg.data.train, processor, None, cfg.data.max_length, "as-is", check)
        assert report.ok
        return SupervisedDataset(samples, processor.images, None, check.max_pixels)

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    monkeypatch.setattr(train_loop, "load_data", eager)
    before = train_loop.train(tiny_run_config(tiny_base, data, tmp_path / "eager", "finetune", epochs=1)).losses
    assert len(lazy) == len(before) == 2 and lazy == before
    assert batches.load_data is not eager


def test_data_validate_says_how_records_were_counted(color_data, tmp_path, capsys):
    from scitune.cli import main
    from scitune.loader import save_checkpoint

    ck = save_checkpoint(*tiny_vlm(), tmp_path / "ck")
    argv = ["data", "validate", "--data", str(color_data), "--checkpoint", str(ck), "--progress", "false"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "16 records, 0 bad" in out and "0 usable records counted exactly, 16 shown to fit by an upper bound" in out
    assert main([*argv, "--exact", "true"]) == 0
    assert "16 usable records counted exactly, 0 shown to fit" in capsys.readouterr().out


def test_a_truncated_image_is_found_from_its_end(tmp_path):
    color = make_color_records(tmp_path / "data", n=2)
    good = (color.parent / "img1.png").read_bytes()
    (color.parent / "img1.png").write_bytes(good[: len(good) - 20])
    result = validate_records(color, _processor(), cache="off")
    (problem,) = result.report.problems
    assert problem.record_id == "r1" and "img1.png: cannot read image" in problem.message


def test_chat_messages_records_are_checked_in_their_canonical_form(tmp_path):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "ok.png")
    image = {"type": "image_url", "image_url": {"url": "ok.png"}}
    good = {
        "id": "m",
        "messages": [
            {"role": "user", "content": [image, {"type": "text", "text": "What?"}]},
            {"role": "assistant", "content": "A plot."},
        ],
    }
    web = {
        "id": "w",
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]},
            {"role": "assistant", "content": "A plot."},
        ],
    }
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (good, web)))
    processor = _processor()
    samples, old = validate_file(path, processor)
    new = validate_records(path, processor, cache="off")
    assert [str(p) for p in new.report.problems] == [str(p) for p in old.problems] and len(old.problems) == 1
    assert len(new) == 1 and new.lengths[0] >= len(samples[0].encoded)
    assert lazy_dataset(new, processor, None, 2048).samples[0].encoded == samples[0].encoded


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_parts_checked_side_by_side_give_the_same_verdict(suffix, tmp_path, monkeypatch):
    import random

    from scitune.data import records

    monkeypatch.setattr(records, "MIN_SPLIT", 0)  # cut even a small file
    Image.new("RGB", (8, 8), "red").save(tmp_path / "ok.png")
    rng = random.Random(0)
    recs = [
        _rec(f"r{i}", "ok.png" if rng.random() < 0.8 else "nope.png", "<image>\nWhat é?" + " x" * rng.randint(0, 40))
        for i in range(120)
    ]
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":
        lines = [json.dumps(r, ensure_ascii=False) for r in recs]
        lines[30], lines[61], lines[90] = '{"id": "cut", ', "", "[1]"
        path.write_text("\n".join(lines) + "\n")
    else:
        text = json.dumps(recs, indent=2, ensure_ascii=False)
        for i in (30, 61, 90):
            text = text.replace(f'"id": "r{i}"', f'"id": "r{i}",,')
        path.write_text(text)
    one = validate_records(path, _processor(), max_length=200, cache="off", workers=1)
    assert len(one.report.problems) > 3 and len(one) > 60
    for workers in (2, 3, 5):
        assert len(records.RecordFile(path).split(workers)) > 1
        many = validate_records(path, _processor(), max_length=200, cache="off", workers=workers)
        assert [str(p) for p in many.report.problems] == [str(p) for p in one.report.problems]
        assert many.report.total == one.report.total
        for name in ("starts", "ends", "numbers", "lengths", "exact"):
            assert getattr(many, name).tolist() == getattr(one, name).tolist(), (workers, name)


def test_image_headers_read_here_agree_with_pil(tmp_path):
    import random

    from scitune.images import check_image

    rng = random.Random(0)
    for i in range(40):
        kind = rng.choice(["JPEG", "PNG"])
        mode = rng.choice(["RGB", "L", "CMYK"] if kind == "JPEG" else ["RGB", "L", "RGBA", "P", "1"])
        options = rng.choice([{}, {"progressive": True}, {"icc_profile": bytes(70000)}]) if kind == "JPEG" else {}
        path = tmp_path / f"{i}.{kind.lower()}"
        Image.new(mode, (rng.randint(1, 700), rng.randint(1, 700))).save(path, kind, **options)
        with Image.open(path) as im:
            assert check_image(path) == im.size
