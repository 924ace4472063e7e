"""POPE from LLaVA's combined question file (all three sets, a ``category`` per line, no labels) and one answer file:
split by category, labels from POPE's own files, the per-category table."""

from __future__ import annotations

import json

import pytest

from scitune.cli.eval import main
from scitune.eval.pope import score_pope
from scitune.io import DataError

SUFFIX = "\nAnswer the question using a single word or phrase."
CATEGORIES = ("adversarial", "popular", "random")


def _combined(shared_data, tmp_path, per_category=None):
    """LLaVA's layout: llava_pope_test.jsonl (question ids unique over the file, LLaVA's answer-format line appended,
    no label) and the labelled questions by category."""
    questions, labels, qid = [], {}, 0
    for cat in CATEGORIES:
        rows = [json.loads(x) for x in (shared_data / "pope" / f"coco_pope_{cat}.json").read_text().splitlines()]
        for r in rows[:per_category]:
            qid += 1
            questions.append({"question_id": qid, "image": r["image"], "text": r["text"] + SUFFIX, "category": cat})
            labels[qid] = (cat, r["label"])
    path = tmp_path / "llava_pope_test.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in questions))
    return path, questions, labels


def _answers(tmp_path, questions, answer):
    """A LLaVA answer file: {question_id, prompt, text, answer_id, model_id, metadata} a line (no category)."""
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps({"question_id": q["question_id"], "prompt": q["text"], "text": answer(q),
                                        "answer_id": f"a{q['question_id']}", "model_id": "llava", "metadata": {}}) + "\n"
                            for q in questions))  # fmt: skip
    return path


def test_per_category_table_from_llava_files(shared_data, tmp_path):
    data, questions, labels = _combined(shared_data, tmp_path, per_category=40)

    def answer(q):  # right on even ids, always "Yes" on odd ones
        label = labels[q["question_id"]][1]
        return label.capitalize() + "." if q["question_id"] % 2 == 0 else "Yes, there is."

    answers = _answers(tmp_path, questions, answer)
    out = tmp_path / "out"
    assert main(["pope", "--data", str(data), "--labels", str(shared_data / "pope"), "--predictions", str(answers),
                 "--out", str(out), "--progress", "false"]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    assert list(res["splits"]) == list(CATEGORIES) and res["input"]["missing"] == 0
    assert res["input"]["unknown_ids"] == 0 and res["input"]["malformed"] == 0
    for cat in CATEGORIES:
        ids = [q["question_id"] for q in questions if q["category"] == cat]
        expected = score_pope([labels[i][1] for i in ids], [answer({"question_id": i}) for i in ids])
        assert res["splits"][cat] == expected and expected["count"] == 40
        assert res["summary"][f"{cat}_accuracy"] == pytest.approx(100 * expected["accuracy"])
    report = (out / "report.md").read_text()
    assert all(f"| {cat} | 40 |" in report for cat in CATEGORIES)


def test_all_real_questions_with_labels_found_next_to_the_file(shared_data, tmp_path):
    import shutil

    for cat in CATEGORIES:  # LLaVA's layout: pope/llava_pope_test.jsonl beside pope/coco/coco_pope_<cat>.json
        (tmp_path / "coco").mkdir(exist_ok=True)
        shutil.copy(shared_data / "pope" / f"coco_pope_{cat}.json", tmp_path / "coco")
    data, questions, labels = _combined(shared_data, tmp_path)
    answers = _answers(tmp_path, questions, lambda q: "Yes")
    out = tmp_path / "out"
    assert main(["pope", "--data", str(data), "--predictions", str(answers), "--out", str(out), "--progress",
                 "false"]) == 0  # fmt: skip
    splits = json.loads((out / "results.json").read_text())["splits"]
    assert {c: splits[c]["count"] for c in CATEGORIES} == {"adversarial": 3000, "popular": 3000, "random": 2910}
    for cat in CATEGORIES:  # all "yes": accuracy = the share of yes labels (half of each POPE set)
        yes = sum(1 for c, y in labels.values() if c == cat and y == "yes")
        assert splits[cat]["yes_ratio"] == 1.0 and splits[cat]["accuracy"] == pytest.approx(yes / splits[cat]["count"])


def test_combined_file_problems(shared_data, tmp_path):
    data, questions, _ = _combined(shared_data, tmp_path, per_category=2)
    answers = _answers(tmp_path, questions, lambda q: "No")
    lines = data.read_text().splitlines()
    bad = json.loads(lines[1])
    bad["text"] = "Is there a unicorn in the image?"
    data.write_text("\n".join([lines[0], json.dumps(bad), *lines[2:]]) + "\n")
    with pytest.raises(DataError, match=r"llava_pope_test.jsonl:2: no label for this image and question in "):
        main(["pope", "--data", str(data), "--labels", str(shared_data / "pope"), "--predictions", str(answers),
              "--out", str(tmp_path / "o")])  # fmt: skip
    dup = json.loads(lines[0])
    data.write_text("\n".join([lines[0], json.dumps(dup)]) + "\n")
    with pytest.raises(DataError, match=r"llava_pope_test.jsonl:2: question_id 1 repeats"):
        main(["pope", "--data", str(data), "--labels", str(shared_data / "pope"), "--predictions", str(answers),
              "--out", str(tmp_path / "o")])  # fmt: skip
    with pytest.raises(DataError, match=r"coco_pope_adversarial.json: POPE label file of category"):
        main(["pope", "--data", str(data), "--labels", str(tmp_path), "--predictions", str(answers),
              "--out", str(tmp_path / "o")])  # fmt: skip
