"""--blind (blank images of the same size, scored beside the image run) on ScienceQA, POPE, figure-type and VQA."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from tests.unit.eval.evalkit import is_png, session_checkpoint

from scitune.cli.eval import main
from scitune.eval.blind import BLIND_PREFIX, blank_image, blind_table

TINY = ["--max-new-tokens", "3", "--progress", "false", "--device", "cpu"]


@pytest.fixture(scope="module")
def scifig(tmp_path_factory):
    from scitune.sources.scifig import SciFigConfig, generate_scifig

    root = tmp_path_factory.mktemp("scifig-blind")
    generate_scifig(root, SciFigConfig(n_train=4, n_val=0, n_test=3, image_size=32), progress=False)
    return root


def _records(out):
    return [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]


def test_blank_image_and_table(tmp_path):
    Image.new("RGB", (7, 5), "red").save(tmp_path / "a.png")
    path = blank_image(str(tmp_path / "a.png"), tmp_path / "out")
    with Image.open(path) as im:
        assert im.size == (7, 5) and im.getpixel((3, 2)) == (255, 255, 255)
    assert blank_image(str(tmp_path / "missing.png"), tmp_path / "out") == str(tmp_path / "missing.png")
    rows = blind_table({"acc": 60.0, "n": 3, "note": "x"}, {"acc": 40.0, "n": 3})
    assert rows == [["acc", 60.0, 40.0, 20.0], ["n", 3, 3, 0]]


def test_scienceqa_blind_beside_image_run(scifig, tmp_path_factory, tmp_path):
    ck = session_checkpoint(tmp_path_factory)["checkpoint"]
    out = tmp_path / "sqa"
    assert main(["scienceqa", "--data", str(scifig / "scienceqa"), "--checkpoint", ck, "--out", str(out),
                 "--blind", "true", *TINY]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    problems = json.loads((scifig / "scienceqa" / "problems.json").read_text())
    recs = {r["id"]: r for r in _records(out)}
    test = json.loads((scifig / "scienceqa" / "pid_splits.json").read_text())["test"]
    with_image = [p for p in test if problems[p]["image"]]
    assert with_image and set(recs) == set(test) | {BLIND_PREFIX + p for p in with_image}
    assert recs[BLIND_PREFIX + with_image[0]]["prompt"] == recs[with_image[0]]["prompt"]
    assert "acc" in res["blind"]["summary"] and res["summary"]["blind_acc"] == res["blind"]["summary"]["acc"]
    assert res["blind"]["accuracy"]["count"] == res["accuracy"]["count"] == len(test)
    assert list(out.glob("blank-*.png")) and is_png(out / "blind.png")
    assert "## Blind baseline" in (out / "report.md").read_text()
    # the blind score uses the blind answers: scoring them by hand with the official parse gives the same number
    from scitune.eval.scienceqa import score_scienceqa

    blind_preds = {p: recs.get(BLIND_PREFIX + p, recs[p])["text"] for p in test}
    assert score_scienceqa(problems, blind_preds, test)["acc"] == res["blind"]["accuracy"]["acc"]
    # a rerun resumes both runs from predictions.jsonl and gives the same results
    assert main(["scienceqa", "--data", str(scifig / "scienceqa"), "--checkpoint", ck, "--out", str(out),
                 "--blind", "true", *TINY]) == 0  # fmt: skip
    assert json.loads((out / "results.json").read_text())["summary"] == res["summary"]


def test_scienceqa_blind_needs_an_output_folder(scifig):
    from scitune.eval.scienceqa_benchmark import ScienceQABenchmark, ScienceQAOptions

    with pytest.raises(ValueError, match="--blind needs --out or --checkpoint"):
        ScienceQABenchmark(ScienceQAOptions(data=str(scifig / "scienceqa"), blind=True, predictions="x")).examples()


def test_pope_blind_from_predictions(tmp_path):
    for i in range(2):
        Image.new("RGB", (8 + i, 6), "blue").save(tmp_path / f"im{i}.jpg")
    qs = [{"question_id": i, "image": f"im{i % 2}.jpg", "text": f"Is there a q{i}?", "label": ["yes", "no"][i % 2]}
          for i in range(4)]  # fmt: skip
    data = tmp_path / "coco_pope_random.json"
    data.write_text("".join(json.dumps(q) + "\n" for q in qs))
    # the image run answers all right; the blind run always "yes"
    preds = [{"id": f"random/{q['question_id']}", "text": q["label"].capitalize()} for q in qs]
    preds += [{"id": f"{BLIND_PREFIX}random/{q['question_id']}", "text": "Yes"} for q in qs]
    pfile = tmp_path / "preds.jsonl"
    pfile.write_text("".join(json.dumps(p) + "\n" for p in preds))
    out = tmp_path / "out"
    assert main(["pope", "--data", str(data), "--image_root", str(tmp_path), "--predictions", str(pfile), "--out",
                 str(out), "--blind", "true", "--progress", "false"]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    assert res["summary"]["random_accuracy"] == 100.0 and res["summary"]["blind_random_accuracy"] == 50.0
    assert res["blind"]["splits"]["random"]["yes_ratio"] == 1.0 and res["input"]["missing"] == 0
    assert sorted(p.name for p in out.glob("blank-*.png")) == ["blank-8x6.png", "blank-9x6.png"]


def test_figure_type_blind(tmp_path_factory, tmp_path):
    from tests.unit.eval.evalkit import make_scifig

    root = make_scifig(tmp_path_factory.mktemp("scifig-ft"))
    ck = session_checkpoint(tmp_path_factory)["checkpoint"]
    out = tmp_path / "ft"
    assert main(["figure-type", "--data", str(root / "scicap" / "test.jsonl"), "--checkpoint", ck, "--out", str(out),
                 "--blind", "true", *TINY]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    n = res["model"]["count"]
    assert res["blind"]["model"]["count"] == n and len(_records(out)) == 2 * n and "blind_acc" in res["summary"]


def test_vqa_blank_blind_rows(scifig, tmp_path_factory, tmp_path):
    ck = session_checkpoint(tmp_path_factory)["checkpoint"]
    out = tmp_path / "vqa"
    assert main(["vqa", "--data", str(scifig / "scienceqa"), "--checkpoint", ck, "--out", str(out), "--shots", "[0, 1]",
                 "--blind_image", "blank", *TINY]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    assert set(res["summary"]) == {"0-shot", "1-shot", "blind-0-shot", "blind-1-shot"}
    recs = {r["id"]: r for r in _records(out)}
    one = next(k for k in recs if k.startswith("1-shot/"))
    assert recs["blind-" + one]["prompt"] == recs[one]["prompt"] and recs[one]["prompt"].count("<image>") == 2
    assert list(out.glob("blank-*.png")) and "blank images" in (out / "report.md").read_text()
