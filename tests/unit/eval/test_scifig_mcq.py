"""The ``scifig-mcq`` benchmark: the option an explanation names, question kinds, figure reading per protocol from
known predictions (counts by construction), ScienceQA's official numbers unchanged, and ``--blind`` (blank images
of the figures' sizes, the same prompts) on a tiny checkpoint."""

from __future__ import annotations

import json

import pytest
from evalkit import is_png, session_checkpoint
from PIL import Image

from scitune.cli.eval import main
from scitune.eval.scifig_mcq import TYPE_ONLY_KINDS, named_choice, question_kind, score_kinds

LETTERS = "ABCDE"


@pytest.fixture(scope="module")
def scifig(tmp_path_factory):
    """8 SciFig test figures with the demo's question kinds (figure reading) and a few text questions."""
    from scitune.sources.scifig import GLANCE_KINDS, SciFigConfig, generate_scifig

    root = tmp_path_factory.mktemp("scifig-mcq")
    kinds = tuple(k for k in GLANCE_KINDS if k != "figure-type")
    generate_scifig(root, SciFigConfig(n_train=0, n_val=0, n_test=8, image_size=64, kinds=kinds), progress=False)
    problems = json.loads((root / "scienceqa" / "problems.json").read_text())
    pids = json.loads((root / "scienceqa" / "pid_splits.json").read_text())["test"]
    return root, problems, pids


def test_named_choice_is_the_last_whole_word_choice_before_the_answer():
    choices = ["2", "3", "12"]
    assert named_choice("I count 3 curves, not 2. The answer is A.", choices) == 0  # the last one named
    assert named_choice("There are 12 curves. The answer is B.", choices) == 2  # "12" is not "2"
    assert named_choice("The answer is B. It shows 3 curves.", choices) == -1  # after the answer: not read
    assert named_choice("no number here", choices) == -1
    assert named_choice("positive correlation", ["positive correlation", "negative correlation"]) == 0


def test_question_kinds():
    assert question_kind({"question": "How many bars are shown?", "image": "image.png", "hint": ""}) == "count-bars"
    text = {"question": "How many bars are shown?", "image": None, "hint": "The chart has 4 bars."}
    assert question_kind(text) == "text-count-bars"
    assert question_kind({"question": "What is the capital of France?", "image": None, "hint": ""}) == "other"


def _texts(problems, pids):
    """Texts by construction over the figure-reading pids, cycling: 0 names the right choice and gives a wrong
    letter; 1 gives only the right letter; 2 gives a wrong letter only; 3 is missing."""
    kinds = {p: question_kind(problems[p]) for p in pids}
    reading = [p for p in pids if problems[p]["image"] and kinds[p] not in TYPE_ONLY_KINDS]
    texts, pattern = {}, {}
    for i, pid in enumerate(reading):
        prob, case = problems[pid], i % 4
        right, wrong = prob["answer"], (prob["answer"] + 1) % len(prob["choices"])
        pattern[pid] = case
        if case == 0:
            texts[pid] = f"The figure shows {prob['choices'][right]}. The answer is {LETTERS[wrong]}."
        elif case == 1:
            texts[pid] = f"The answer is {LETTERS[right]}."
        elif case == 2:
            texts[pid] = f"The answer is {LETTERS[wrong]}."
    return reading, pattern, texts


def test_score_kinds_by_construction(scifig):
    _, problems, pids = scifig
    reading, pattern, texts = _texts(problems, pids)
    assert len(reading) >= 4
    res = score_kinds(problems, pids, {p: {"text": t} for p, t in texts.items()})
    n = len(reading)
    cases = [sum(1 for p in reading if pattern[p] == c) for c in range(4)]
    assert res["count"] == n and set(res["reading_kinds"]) == {question_kind(problems[p]) for p in reading}
    assert res["choice"]["figure_reading"] == round(100 * (cases[0] + cases[1]) / n, 2)
    assert res["letter"]["figure_reading"] == round(100 * cases[1] / n, 2)
    chance = sum(1 / len(problems[p]["choices"]) for p in reading) / n
    assert res["chance"] == round(100 * chance, 2)
    assert res["choice"]["results"] == {
        p: (problems[p]["answer"] if pattern.get(p) in (0, 1) else -1 if pattern.get(p, 3) == 3 else
            (problems[p]["answer"] + 1) % len(problems[p]["choices"])) for p in pids
    }  # fmt: skip
    # option indices made elsewhere are used as they are, under both protocols
    idx = score_kinds(problems, pids, {p: {"index": problems[p]["answer"]} for p in pids})
    assert idx["choice"]["figure_reading"] == idx["letter"]["figure_reading"] == 100.0


def test_predictions_run_keeps_scienceqa_numbers_and_adds_kinds(scifig, tmp_path):
    root, problems, pids = scifig
    _, _, texts = _texts(problems, pids)
    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(json.dumps({"id": p, "text": t}) + "\n" for p, t in texts.items()))
    args = ["--predictions", str(pred), "--data", str(root / "scienceqa"), "--split", "test", "--progress", "false"]
    assert main(["scifig-mcq", *args, "--out", str(tmp_path / "mcq")]) == 0
    assert main(["scienceqa", *args, "--out", str(tmp_path / "sqa")]) == 0
    mcq = json.loads((tmp_path / "mcq" / "results.json").read_text())
    sqa = json.loads((tmp_path / "sqa" / "results.json").read_text())
    assert {k: mcq["summary"][k] for k in sqa["summary"]} == sqa["summary"]  # the official numbers, unchanged
    assert mcq["accuracy"] == sqa["accuracy"]
    fr = mcq["figure_reading"]
    assert mcq["summary"]["figure_reading"] == fr["choice"]["figure_reading"] and not mcq["blind"]
    assert mcq["summary"]["figure_reading_letter"] == fr["letter"]["figure_reading"]
    assert all(mcq["summary"][f"kind:{k}"] == v for k, v in fr["choice"]["per_kind"].items())
    report = (tmp_path / "mcq" / "report.md").read_text()
    assert "### Figure reading (with the figures)" in report and "### Accuracy (%) per question kind" in report
    assert "## ScienceQA scoring" in report and is_png(tmp_path / "mcq" / "kinds.png")


def test_blind_run_on_a_tiny_checkpoint(scifig, tmp_path_factory, tmp_path):
    root, problems, pids = scifig
    ck = session_checkpoint(tmp_path_factory)["checkpoint"]
    args = ["--checkpoint", ck, "--data", str(root / "scienceqa"), "--split", "test", "--prompt-format", "QCM-EA",
            "--image-position", "after", "--max-new-tokens", "3", "--progress", "false", "--device", "cpu"]  # fmt: skip
    assert main(["scifig-mcq", *args, "--out", str(tmp_path / "image")]) == 0
    assert main(["scifig-mcq", *args, "--blind", "--out", str(tmp_path / "blind")]) == 0
    recs = {m: [json.loads(x) for x in (tmp_path / m / "predictions.jsonl").read_text().splitlines()]
            for m in ("image", "blind")}  # fmt: skip
    assert [r["prompt"] for r in recs["blind"]] == [r["prompt"] for r in recs["image"]]  # the same questions
    assert len(recs["blind"]) == len(pids) and recs["image"][0]["prompt"].endswith("\n<image>")
    sizes = {Image.open(root / "scienceqa" / "images" / p / problems[p]["image"]).size for p in pids
             if problems[p]["image"]}  # fmt: skip
    blanks = sorted((tmp_path / "blind").glob("blank-*.png"))
    assert [b.name for b in blanks] == sorted(f"blank-{w}x{h}.png" for w, h in sizes)
    with Image.open(blanks[0]) as im:
        assert im.convert("RGB").getextrema() == ((255, 255), (255, 255), (255, 255))  # all white
    blind = json.loads((tmp_path / "blind" / "results.json").read_text())
    assert blind["blind"] and blind["options"]["blind"] and blind["input"]["missing"] == 0
    assert "blind: every figure replaced by a blank image" in (tmp_path / "blind" / "report.md").read_text()
    # a rerun resumes into the same folder (the blank image is scitune's own file there)
    assert main(["scifig-mcq", *args, "--blind", "--out", str(tmp_path / "blind")]) == 0
