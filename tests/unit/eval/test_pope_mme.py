"""POPE and MME scoring against hand-computed values: answer extraction rules, metrics, the real POPE question
files and hand-made MME folders in both standard layouts, with LLaVA answer files as input."""

from __future__ import annotations

import json

import pytest

from scitune.cli.eval import main
from scitune.eval.mme import load_mme, mme_answer, score_mme
from scitune.eval.pope import pope_answer, score_pope


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes, there is a dog.", "yes"),
        ("No, there is not.", "no"),
        ("There is no dog in the image.", "no"),
        ("Yes. There is no cat.", "yes"),  # only the first sentence counts
        ("I do not see one", "no"),
        ("Not really", "yes"),  # "Not" (capital) is not one of the words
        ("no\nthere is none", "yes"),  # split on single spaces only: "no\nthere" is one word
        ("nope", "yes"),
        ("", "yes"),
    ],
)
def test_pope_answer_rules(text, expected):
    assert pope_answer(text) == expected


def test_score_pope_hand_computed():
    labels = ["yes", "yes", "no", "no", "yes"]
    answers = ["Yes", "No", "no", "Yes it is", None]  # the missing answer counts as the wrong one ("no")
    m = score_pope(labels, answers)
    assert (m["tp"], m["fn"], m["tn"], m["fp"], m["missing"]) == (1, 2, 1, 1, 1)
    assert m["accuracy"] == pytest.approx(2 / 5) and m["precision"] == pytest.approx(1 / 2)
    assert m["recall"] == pytest.approx(1 / 3) and m["f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert m["yes_ratio"] == pytest.approx(2 / 5)
    none = score_pope(["no", "no"], ["no", "No."])
    assert none["precision"] is None and none["accuracy"] == 1.0 and none["yes_ratio"] == 0.0


def test_pope_on_real_question_file_with_llava_answers(shared_data, tmp_path):
    qfile = shared_data / "pope" / "coco_pope_adversarial.json"
    qs = [json.loads(x) for x in qfile.read_text().splitlines()[:40]]
    lines = []
    tp = fp = tn = fn = 0
    for i, q in enumerate(qs):
        if i % 10 == 9:
            fn += q["label"] == "yes"  # missing: scored as the wrong answer
            fp += q["label"] == "no"
            continue
        say_yes = (q["label"] == "yes") != (i % 4 == 0)  # every 4th answer is wrong
        lines.append(json.dumps({"question_id": q["question_id"], "prompt": q["text"],
                                 "text": "Yes, there is." if say_yes else "No, there is not."}))  # fmt: skip
        tp += say_yes and q["label"] == "yes"
        fp += say_yes and q["label"] == "no"
        tn += not say_yes and q["label"] == "no"
        fn += not say_yes and q["label"] == "yes"
    lines.append("{broken")
    pred = tmp_path / "answers.jsonl"
    pred.write_text("\n".join(lines) + "\n")
    out = tmp_path / "pope"
    assert main(["pope", "--data", str(qfile), "--predictions", str(pred), "--out", str(out), "--limit", "40",
                 "--progress", "false"]) == 0  # fmt: skip
    m = json.loads((out / "results.json").read_text())["splits"]["adversarial"]
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
    assert m["accuracy"] == pytest.approx((tp + tn) / 40) and m["yes_ratio"] == pytest.approx((tp + fp) / 40)
    assert "| adversarial | 40 | 4 |" in (out / "report.md").read_text()


def test_pope_bare_ids_over_several_splits_are_unknown(shared_data, tmp_path):
    pred = tmp_path / "a.jsonl"
    pred.write_text(json.dumps({"question_id": 1, "text": "Yes"}) + "\n"
                    + json.dumps({"question_id": 1, "category": "random", "text": "Yes"}) + "\n")  # fmt: skip
    out = tmp_path / "o"
    assert main(["pope", "--data", str(shared_data / "pope"), "--predictions", str(pred), "--out", str(out),
                 "--progress", "false"]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    assert res["input"]["unknown_ids"] == 1 and res["input"]["predictions"] == 1
    assert set(res["splits"]) == {"random", "popular", "adversarial"} and res["splits"]["random"]["count"] == 2910


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", "yes"),
        ("No.", "no"),
        ("yes, it is", "yes"),
        ("The answer is yes", "other"),
        ("none", "no"),
        ("", "other"),
    ],
)
def test_mme_answer_rules(text, expected):
    assert mme_answer(text) == expected


def test_score_mme_hand_computed():
    items = [
        ("existence", "a.jpg", "Yes", "Yes"), ("existence", "a.jpg", "No", "No"),  # image a: both right
        ("existence", "b.jpg", "Yes", "Yes"), ("existence", "b.jpg", "No", "maybe"),  # image b: one right
        ("code_reasoning", "c.png", "Yes", "No"), ("code_reasoning", "c.png", "No", None),  # none right
    ]  # fmt: skip
    r = score_mme(items)
    ex = r["subtasks"]["existence"]
    assert (ex["acc"], ex["acc_plus"], ex["score"], ex["other"]) == (75.0, 50.0, 125.0, 1)
    assert r["subtasks"]["code_reasoning"]["score"] == 0.0
    assert (r["perception"], r["cognition"]) == (125.0, 0.0)


def _write_mme_release(root):
    """Both release layouts: questions next to images (existence) and questions_answers_YN/ + images/ (artwork)."""
    (root / "existence").mkdir(parents=True)
    for stem, qa in (("000001", [("Is there a dog in this image? Please answer yes or no.", "Yes"),
                                 ("Is there a cat in this image? Please answer yes or no.", "No")]),
                     ("000002", [("Is there a car in this image? Please answer yes or no.", "No"),
                                 ("Is there a bus in this image? Please answer yes or no.", "Yes")])):  # fmt: skip
        (root / "existence" / f"{stem}.jpg").write_bytes(b"jpg")
        (root / "existence" / f"{stem}.txt").write_text("".join(f"{q}\t{a}\n" for q, a in qa))
    (root / "artwork" / "questions_answers_YN").mkdir(parents=True)
    (root / "artwork" / "images").mkdir()
    (root / "artwork" / "images" / "10002.jpg").write_bytes(b"jpg")
    (root / "artwork" / "questions_answers_YN" / "10002.txt").write_text(
        "Is this artwork created by X? Please answer yes or no.\tYes\nIs this artwork created by Y? Please answer yes or no.\tNo\n"
    )


def test_mme_release_layout_with_llava_answers(tmp_path):
    root = tmp_path / "MME"
    _write_mme_release(root)
    qs = load_mme(root)
    assert len(qs) == 6 and qs[0][0] == "artwork" and qs[0][4].endswith("artwork/images/10002.jpg")
    suffix = "\nAnswer the question using a single word or phrase."
    answers = [  # LLaVA strips "Please answer yes or no." and adds its suffix; ids are subtask/<path of image>
        ("existence/000001.jpg", "Is there a dog in this image?", "Yes"),
        ("existence/000001.jpg", "Is there a cat in this image?", "No"),
        ("existence/000002.jpg", "Is there a car in this image?", "Yes"),  # wrong
        ("existence/000002.jpg", "Is there a bus in this image?", "Yes"),
        ("artwork/images/10002.jpg", "Is this artwork created by X?", "Yes"),
        ("artwork/images/10002.jpg", "Is this artwork created by Y?", "No"),
        ("artwork/images/99999.jpg", "Is this artwork created by Z?", "No"),  # not in the data
    ]
    pred = tmp_path / "mme.jsonl"
    pred.write_text(
        "".join(json.dumps({"question_id": i, "prompt": q + suffix, "text": t}) + "\n" for i, q, t in answers)
    )
    out = tmp_path / "o"
    assert main(["mme", "--data", str(root), "--predictions", str(pred), "--out", str(out), "--progress", "false"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["subtasks"]["existence"]["acc"] == 75.0 and res["subtasks"]["existence"]["acc_plus"] == 50.0
    assert res["subtasks"]["artwork"]["score"] == 200.0 and res["perception"] == 325.0
    assert res["input"]["unknown_ids"] == 1 and res["input"]["missing"] == 0


def test_mme_flattened_layout(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    (root / "OCR.txt").write_text(
        "a.png\tIs the word A? Please answer yes or no.\tYes\na.png\tIs the word B? Please answer yes or no.\tNo\n"
    )
    (root / "text_translation.txt").write_text(
        "t.png\tIs it hello? Please answer yes or no.\tYes\nt.png\tIs it bye? Please answer yes or no.\tNo\n"
    )
    qs = load_mme(root)
    pred = tmp_path / "p.jsonl"
    pred.write_text("".join(json.dumps({"id": f"{t}/{img}#{k}", "text": "yes"}) + "\n"
                            for t, img, k in (("OCR", "a.png", 0), ("OCR", "a.png", 1), ("text_translation", "t.png", 0))))  # fmt: skip
    out = tmp_path / "o"
    assert len(qs) == 4
    assert main(["mme", "--data", str(root), "--predictions", str(pred), "--out", str(out), "--progress", "false"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["perception"] == 50.0 + 0.0 and res["cognition"] == 50.0  # one of two right, no image fully right
    assert res["input"]["missing"] == 1
