"""Unicorn's OODCV-VQA and Sketchy-VQA: the authors' answer reading and metrics by hand, their released file
layouts, and a tiny-model run."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from tests.unit.eval.evalkit import is_png, session_checkpoint

from scitune.cli.eval import main
from scitune.eval.unicorn import counterfactual_answer, oodcv_correct, score_oodcv, score_sketchy, sketchy_answer
from scitune.io import DataError

TINY = ["--max-new-tokens", "4", "--progress", "false", "--device", "cpu"]


def _oodcv(root, name="oodcv-vqa.json"):
    """Questions in the released layout: {image, question, answer, text_answer, options, situation}."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (answer, situation) in enumerate([("Yes", "iid"), ("No", "weather"), ("2", "occlusion"), ("0", "pose")]):
        Image.new("RGB", (16, 12), (40 * i, 90, 30)).save(root / "images" / f"{i}.jpg")
        rows.append({"image": f"images/{i}.jpg", "question": f"Is there a thing {i} in the image?", "answer": answer,
                     "text_answer": answer.lower(), "options": ["A. Yes", "B. No"], "situation": situation})  # fmt: skip
    (root / name).write_text(json.dumps(rows))
    return rows


def _sketchy(root, name="sketchy-vqa.json"):
    """Questions in the released layout: {image, question, answer}."""
    (root / "sketches").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, answer in enumerate(["Yes", "No", "Yes", "No"]):
        Image.new("L", (14, 14), 255 - 20 * i).save(root / "sketches" / f"{i}.png")
        rows.append({"image": f"sketches/{i}.png", "question": f"Is this a sketch of object {i}?", "answer": answer})
    (root / name).write_text(json.dumps(rows))
    return rows


@pytest.mark.parametrize(
    "prediction, answer, right",
    [
        ("Yes, there is.", "Yes", True),
        ("There is no car.", "Yes", False),
        ("I see two cars.", "2", True),
        ("There are 2.5 cars", "2", True),  # a substring match, as the authors' code
        ("None of them.", "0", False),  # "None" is capitalised: none of none/no/zero occurs
        ("there is nothing", "0", True),  # "no" in "nothing"
        ("Nope.", "No", True),
        ("one", "1", True),
        ("A single dog. Two cats", "2", False),  # only the first sentence counts
    ],
)
def test_oodcv_reading(prediction, answer, right):
    assert oodcv_correct(prediction, answer) is right


def test_counterfactual_reading():
    assert counterfactual_answer("I'm sorry, I cannot", True) == "Bad Texts."
    assert counterfactual_answer("Yes there would be", True) == "Yes"
    assert counterfactual_answer("If two more were added there would be 4 dogs", False) == "there would be 4 dogs"
    assert counterfactual_answer("There would be 3 if one left", False) == "There would be 3 "
    assert oodcv_correct("If one more came, there would be three cats.", "3", counterfactual=True)
    assert not oodcv_correct("If three more came, there would be five cats.", "3", counterfactual=True)
    with pytest.raises(DataError, match="count 0-10"):
        oodcv_correct("x", "eleven")


def test_oodcv_metrics_by_hand():
    items = [("Yes", "iid", "Yes"), ("No", "iid", "yes"), ("2", "pose", "two"), ("3", "pose", None)]
    m = score_oodcv(items)
    assert m["accuracy"] == 50.0 and m["yes_no_accuracy"] == 50.0 and m["digits_accuracy"] == 50.0
    assert m["per_count"]["2"] == 100.0 and m["per_count"]["3"] == 0.0 and m["per_count"]["0"] is None
    assert m["situations"]["pose"] == {"yesno": None, "number": 50.0, "n": 2,
                                       "per_count": {**{str(k): None for k in range(6)}, "2": 100.0, "3": 0.0}}  # fmt: skip


def test_sketchy_metrics_by_hand():
    assert [sketchy_answer(t) for t in ("Yes, it is", "It is not", "yeah", "maybe", "No.")] == [
        "yes",
        "no",
        "yes",
        "nan",
        "nan",
    ]  # fmt: skip ("No." keeps its period: not the word No)
    m = score_sketchy(["Yes", "No", "Yes", "No", "Yes"], ["Yes", "yes", "no", "No", "hmm"])
    assert (m["tp"], m["fp"], m["tn"], m["fn"], m["unread"]) == (1, 1, 1, 1, 1)
    assert m["accuracy"] == 50.0 and m["precision"] == 50.0 and m["recall"] == 50.0 and m["f1"] == 50.0
    assert m["yes_ratio"] == 40.0  # 2 yes of 5 answers: the unread one counts in the denominator


def test_released_layouts_from_predictions(tmp_path):
    root = tmp_path / "oodcv-vqa"
    _oodcv(root)
    rows = _oodcv(root, "oodcv-counterfactual.json")
    preds = [{"id": f"oodcv-vqa/{i}", "text": t} for i, t in enumerate(["Yes.", "No.", "There are two.", "one"])]
    preds += [{"id": f"oodcv-counterfactual/{i}", "text": "No"} for i in range(len(rows))]
    pfile = tmp_path / "p.jsonl"
    pfile.write_text("".join(json.dumps(p) + "\n" for p in preds))
    out = tmp_path / "out"
    assert main(["oodcv-vqa", "--data", str(root), "--predictions", str(pfile), "--out", str(out),
                 "--progress", "false"]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    assert res["summary"]["oodcv-vqa_accuracy"] == 75.0 and res["summary"]["oodcv-vqa_digits_accuracy"] == 50.0
    assert res["summary"]["oodcv-counterfactual_yes_no_accuracy"] == 50.0
    assert "### oodcv-counterfactual" in (out / "report.md").read_text() and is_png(out / "oodcv.png")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "oodcv-vqa.json").write_text(json.dumps([{"image": "x.jpg", "question": "q"}]))
    with pytest.raises(DataError, match="oodcv-vqa.json: question #0: needs image, question, answer, situation"):
        main(["oodcv-vqa", "--data", str(bad), "--predictions", str(pfile), "--out", str(tmp_path / "o2")])


def test_sketchy_on_a_tiny_model(tmp_path, tmp_path_factory):
    root = tmp_path / "sketchy-vqa"
    _sketchy(root)
    _sketchy(root, "sketchy-challenging.json")
    ck = session_checkpoint(tmp_path_factory)["checkpoint"]
    out = tmp_path / "out"
    assert main(["sketchy-vqa", "--data", str(root), "--checkpoint", ck, "--out", str(out), *TINY]) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["splits"]) == {"sketchy-vqa", "sketchy-challenging"}
    recs = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(recs) == 8 and all(r["prompt"].startswith("Is this a sketch of object") for r in recs)
    # the scores are the authors' metrics of exactly these answers
    by_id = {r["id"]: r["text"] for r in recs}
    labels = [r["answer"] for r in json.loads((root / "sketchy-vqa.json").read_text())]
    expected = score_sketchy(labels, [by_id[f"sketchy-vqa/{i}"] for i in range(4)])
    assert res["splits"]["sketchy-vqa"] == expected


def test_oodcv_on_a_tiny_model(tmp_path, tmp_path_factory):
    root = tmp_path / "oodcv"
    _oodcv(root)
    ck = session_checkpoint(tmp_path_factory)["checkpoint"]
    out = tmp_path / "out"
    assert main(["oodcv-vqa", "--data", str(root / "oodcv-vqa.json"), "--checkpoint", ck, "--out", str(out),
                 *TINY]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    assert res["splits"]["oodcv-vqa"]["count"] == 4 and 0 <= res["summary"]["oodcv-vqa_accuracy"] <= 100
