"""`scitune data` actions and the new `scitune convert` sources, end to end through the CLI on SciFig output."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from scitune.cli import main
from scitune.cli.data import ACTIONS

pytest.importorskip("matplotlib")


def _json_out(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_help_for_every_action(action, capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", action, "--help"])
    assert e.value.code == 0 and "usage: scitune data" in capsys.readouterr().out


def test_data_help_lists_actions(capsys):
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    out = capsys.readouterr().out
    assert all(a in out for a in ("validate", "stats", "export", "scifig", "ocr"))


@pytest.fixture(scope="module")
def scifig_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("scifig")
    argv = ["data", "scifig", "--n", "12", "--out", str(out), "--seed", "1", "--image_size", "48", "--workers", "1",
            "--preview", "--preview_per_type", "1", "--no_progress"]  # fmt: skip
    assert main(argv) == 0
    return out


def test_scifig_then_both_converters_unchanged(scifig_dir, tmp_path, capsys):
    manifest = json.loads((scifig_dir / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 10, "val": 1, "test": 1} and manifest["config"]["seed"] == 1
    with Image.open(scifig_dir / "preview.png") as im:
        assert im.size == (150 + 56 + 8, 5 * 56 + 8)
    capsys.readouterr()
    align = tmp_path / "align.jsonl"
    assert main(["convert", "scicap", "--src", str(scifig_dir / "scicap" / "train.jsonl"), "--out", str(align)]) == 0
    assert _json_out(capsys)["written"] == 10
    rec = json.loads(align.read_text().splitlines()[0])
    assert (scifig_dir / rec["image"]).is_file() and rec["conversations"][0]["value"].endswith("\n<image>")
    sqa = tmp_path / "sqa.json"
    images = scifig_dir / "scienceqa" / "images"
    argv = ["convert", "scienceqa", "--src", str(scifig_dir / "scienceqa"), "--out", str(sqa), "--split", "train",
            "--prompt_format", "QCM-LEPA", "--image_root", str(images)]  # fmt: skip
    assert main(argv) == 0
    summary = _json_out(capsys)
    assert summary["records"] == manifest["problems"]["train"] and summary["with_image"] == 10
    first = json.loads(sqa.read_text())[0]
    assert (images / first["image"]).is_file()


def test_stats_export_and_llava_import(scifig_dir, tmp_path, capsys):
    align = tmp_path / "align.jsonl"
    main(["convert", "scicap", "--src", str(scifig_dir / "scicap" / "val.jsonl"), "--out", str(align)])
    capsys.readouterr()
    assert main(["data", "stats", "--data", str(align), "--out", str(tmp_path / "st"), "--image_root",
                 str(scifig_dir)]) == 0  # fmt: skip
    stats = _json_out(capsys)
    assert stats["records"] == 1 and stats["image_files_missing"] == 0 and stats["sources"] == {"scicap": 1}
    assert (tmp_path / "st" / "length_histogram.png").is_file()
    llava = tmp_path / "llava.json"
    assert main(["data", "export", "--format", "llava-json", "--data", str(align), "--out", str(llava)]) == 0
    exported = json.loads(llava.read_text())
    assert set(exported[0]) == {"id", "image", "conversations"}
    capsys.readouterr()
    back = tmp_path / "back.jsonl"
    assert main(["convert", "llava-json", "--src", str(llava), "--out", str(back)]) == 0
    assert _json_out(capsys)["records"] == 1
    original = json.loads(align.read_text())
    again = json.loads(back.read_text())
    assert again["conversations"] == original["conversations"] and again["image"] == original["image"]
    capsys.readouterr()
    assert main(["data", "export", "--format", "alpaca", "--data", str(align), "--out", str(llava)]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # not one of the choices: one line, no usage dump
    assert len(err) == 1 and err[0].startswith("scitune: error:") and "alpaca" in err[0]


def test_bad_input_exits_2_with_the_location(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "q", "conversations": [{"from": "alien", "value": "x"}]}]), encoding="utf-8")
    assert main(["convert", "sharegpt", "--src", str(bad), "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "bad.json: record #0 (id 'q'): turn 0 has unsupported role 'alien'" in err
    assert not (tmp_path / "o.jsonl").exists()


def test_validate_and_checkpoint_stats(color_data, tmp_path, capsys):
    from scitune.data.conversation import record_messages
    from scitune.loader import save_checkpoint, tiny_vlm

    model, processor = tiny_vlm()
    ck = save_checkpoint(model, processor, tmp_path / "ck")
    assert main(["data", "validate", "--data", str(color_data), "--checkpoint", str(ck)]) == 0
    assert "16 records, 0 bad" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text(color_data.read_text().splitlines()[0].replace("img0.png", "nope.png") + "\n")
    assert main(["data", "validate", "--data", str(bad), "--checkpoint", str(ck), "--image_root",
                 str(color_data.parent)]) == 1  # fmt: skip
    captured = capsys.readouterr()
    assert f"{bad}:1 [id=r0]: {color_data.parent / 'nope.png'}: image not found" in captured.out
    assert captured.err.strip().splitlines()[-1].startswith(f"scitune: error: {bad}: 1 of 1 records are bad")
    argv = ["data", "stats", "--data", str(color_data), "--out", str(tmp_path / "st"), "--checkpoint", str(ck)]
    assert main(argv) == 0
    stats = _json_out(capsys)
    lengths = [len(processor.encode(record_messages(json.loads(line)), [(40, 40)]))
               for line in color_data.read_text().splitlines()]  # fmt: skip
    assert stats["length"]["min"] == min(lengths) and stats["length"]["max"] == max(lengths)
    assert stats["length"]["unit"].startswith("tokens") and min(lengths) > model.num_image_tokens
