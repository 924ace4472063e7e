"""ScienceQA converter: byte-identical to LLaVA's reference outputs, LLaVA's quirks, eval prompt, bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from conftest import SHARED_DATA  # noqa: E402
from scitune.io import DataError
from scitune.sources.converters import CONVERTERS
from scitune.sources.converters.scienceqa import (
    PROMPT_FORMATS,
    SINGLE_PRED_PROMPT,
    ScienceQAConverter,
    build_eval_prompt,
    build_prompt,
    convert_scienceqa,
    load_scienceqa,
)

_CANDIDATES = [SHARED_DATA]
DATA = next((p / "scienceqa" for p in _CANDIDATES if (p / "scienceqa").is_dir()), None)
needs_data = pytest.mark.skipif(DATA is None, reason="shared ScienceQA sample not available")
REFERENCE_FILES = [(s, f) for s in ("train", "val") for f in PROMPT_FORMATS]


def _problem(**overrides):
    problem = {
        "question": "Which is bigger?",
        "choices": ["ant", "cow"],
        "answer": 1,
        "hint": "",
        "image": None,
        "lecture": "Size is measured.",
        "solution": "A cow is bigger.",
        "split": "train",
        "subject": "natural science",
    }
    problem.update(overrides)
    return problem


@pytest.fixture(scope="module")
def sample():
    return {
        split: load_scienceqa(DATA / "problems_trainval_sample.json", DATA / "pid_splits.json", split, missing="skip")
        for split in ("train", "val")
    }


@needs_data
@pytest.mark.parametrize(("split", "prompt_format"), REFERENCE_FILES)
def test_matches_llava_reference(sample, split, prompt_format):
    ref_path = DATA / "llava_reference" / f"llava_{split}_{prompt_format}.json"
    data = sample[split]
    records = convert_scienceqa(data.problems, data.pids, prompt_format)
    ref = json.loads(ref_path.read_text(encoding="utf-8"))
    assert records == ref
    assert [list(r) for r in records] == [list(r) for r in ref]  # key order too
    assert json.dumps(records, indent=2).encode() == ref_path.read_bytes()  # what run() writes for .json


@needs_data
@pytest.mark.parametrize(("split", "prompt_format"), [("train", "QCM-LEPA"), ("val", "CQM-A"), ("train", "QCLEM-AEL")])
def test_run_writes_llava_bytes(tmp_path, split, prompt_format, caplog):
    out = tmp_path / "out.json"
    with caplog.at_level(logging.WARNING):
        summary = CONVERTERS.get("scienceqa")().run(
            str(DATA / "problems_trainval_sample.json"),
            str(out),
            split=split,
            prompt_format=prompt_format,
            pid_splits=str(DATA / "pid_splits.json"),
            missing="skip",
        )
    assert out.read_bytes() == (DATA / "llava_reference" / f"llava_{split}_{prompt_format}.json").read_bytes()
    assert summary["records"] == 50 and summary["missing"] > 4000 and len(summary["missing_first"]) == 10
    assert summary["with_image"] + summary["text_only"] == 50
    assert "missing from the problems" in caplog.text


@needs_data
def test_run_missing_pids_error_by_default(tmp_path):
    with pytest.raises(DataError, match=r"12676 of 12726 pids of split 'train'.*first: 98, 99"):
        ScienceQAConverter().run(
            str(DATA / "problems_trainval_sample.json"),
            str(tmp_path / "o.json"),
            pid_splits=str(DATA / "pid_splits.json"),
        )
    assert not (tmp_path / "o.json").exists()


@needs_data
def test_eval_prompt_is_llava_question_text(sample):
    ref = json.loads((DATA / "llava_reference" / "llava_val_CQM-A.json").read_text(encoding="utf-8"))
    problems = sample["val"].problems
    for rec in ref:
        problem = problems[rec["id"]]
        expected = rec["conversations"][0]["value"].replace("<image>", "").strip()
        assert build_eval_prompt(problem) == expected
        assert "Answer" not in build_eval_prompt(problem).splitlines()[-1]
        with_token = build_eval_prompt(problem, with_image_token=True, single_pred_prompt=True)
        prefix = "<image>\n" if problem["image"] else ""
        assert with_token == f"{prefix}{expected}\n{SINGLE_PRED_PROMPT}"


def test_eval_prompt_ignores_output_format():
    p = _problem(image="image.png")
    assert build_eval_prompt(p, "QCM-LEPA") == build_eval_prompt(p, "QCM-A") == build_prompt(p, "QCM-A")[0]
    assert build_eval_prompt(p) == "Context: N/A\nQuestion: Which is bigger?\nOptions: (A) ant (B) cow"


def test_build_prompt_basic_formats():
    p = _problem()
    assert build_prompt(p, "QCM-A") == ("Which is bigger?\nContext: N/A\nOptions: (A) ant (B) cow", "The answer is B.")
    q, a = build_prompt(p, "QCM-LEPA")
    assert a == "LECTURE: Size is measured.\nSOLUTION: A cow is bigger.\n###\nANSWER: B."
    # LLaVA's letters are swapped for AL/AE: AL inserts the solution, AE the lecture.
    assert build_prompt(p, "QCM-AL")[1] == "The answer is B. BECAUSE: A cow is bigger."
    assert build_prompt(p, "QCM-AE")[1] == "The answer is B. BECAUSE: Size is measured."
    assert build_prompt(p, "QCM-LEA")[1] == "Size is measured. A cow is bigger. The answer is B."
    assert build_prompt(p, "QCML-A")[0].endswith("BECAUSE: Size is measured.")
    assert build_prompt(p, "QCM-A", is_test=True)[1] == "Answer:"


def test_build_prompt_quirks():
    # A leading "Question: " prefix is dropped with str.replace, so every later occurrence goes too.
    p = _problem(hint="Question: is this kept?")
    assert build_prompt(p, "QCM-A")[0] == "Which is bigger?\nContext: is this kept?\nOptions: (A) ant (B) cow"
    assert "Question: is this kept?" in build_prompt(p, "CQM-A")[0]  # no leading prefix: nothing removed
    # Same for "Answer: " in the answer text.
    assert build_prompt(_problem(lecture="Answer: maybe."), "QCM-LA")[1] == "maybe. The answer is B."
    # One pass of double -> single space: three spaces become two.
    assert "a  b" in build_prompt(_problem(question="a   b"), "QCM-A")[0]
    # An empty trailing BECAUSE: is dropped, and with it every BECAUSE: in the text.
    assert build_prompt(_problem(solution=""), "QCM-AL")[1] == "The answer is B."
    q = build_prompt(_problem(question="BECAUSE: why", lecture=""), "QCML-A")[0]
    assert q == " why\nContext: N/A\nOptions: (A) ant (B) cow"
    assert build_prompt(_problem(lecture="", solution=""), "QCM-ALE")[1] == "The answer is B."
    assert build_prompt(_problem(lecture=""), "QCML-A")[0].endswith("Options: (A) ant (B) cow")
    # A literal backslash-n in a lecture becomes a newline; real newlines stay.
    assert build_prompt(_problem(lecture="one\\ntwo\nthree"), "QCM-LA")[1] == "one\ntwo\nthree The answer is B."
    # LEPA leaves out empty parts.
    assert build_prompt(_problem(lecture=" "), "QCM-LEPA")[1] == "SOLUTION: A cow is bigger.\n###\nANSWER: B."
    # The context joins the hint with nothing and strips.
    assert "Context: hi\n" in build_prompt(_problem(hint="  hi "), "QCM-A")[0]


def test_convert_records_image_and_meta():
    problems = {"7": _problem(image="image.png"), "8": _problem()}
    recs = convert_scienceqa(problems, ["8", "7"], "QCM-A")
    assert [r["id"] for r in recs] == ["8", "7"]
    assert "image" not in recs[0] and "<image>" not in recs[0]["conversations"][0]["value"]
    assert list(recs[1]) == ["id", "image", "conversations"] and recs[1]["image"] == "7/image.png"
    assert recs[1]["conversations"][0]["value"].endswith("\n<image>")
    assert [t["from"] for t in recs[1]["conversations"]] == ["human", "gpt"]
    meta = convert_scienceqa(problems, ["7"], "QCM-A", with_meta=True)[0]["meta"]
    assert meta["answer"] == "B" and meta["pid"] == "7" and meta["choices"] == ["ant", "cow"]


def test_bad_formats_and_problems():
    with pytest.raises(ValueError, match="QCM, QCML"):
        build_prompt(_problem(), "QMC-A")
    with pytest.raises(ValueError, match="LEPA"):
        convert_scienceqa({}, [], "QCM-XYZ")
    with pytest.raises(DataError, match=r"problems\.json: problem '3' not found"):
        convert_scienceqa({"1": _problem()}, ["3"], source="problems.json")
    with pytest.raises(DataError, match=r"problem '1': field 'answer'"):
        convert_scienceqa({"1": _problem(answer=5)}, ["1"])
    with pytest.raises(DataError, match=r"problem '1': 6 choices"):
        convert_scienceqa({"1": _problem(choices=list("abcdef"), answer=0)}, ["1"])
    with pytest.raises(DataError, match=r"problem '1': field 'lecture'"):
        convert_scienceqa({"1": _problem(lecture=None)}, ["1"])


def _write(path: Path, obj) -> str:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return str(path)


def test_load_errors(tmp_path):
    problems = _write(tmp_path / "problems.json", {"1": _problem(), "2": _problem(image="image.png")})
    splits = _write(tmp_path / "pid_splits.json", {"train": ["1", "2"], "val": ["2", "9"]})
    with pytest.raises(DataError, match=r"nope\.json: file not found"):
        load_scienceqa(tmp_path / "nope.json", splits, "train")
    bad = tmp_path / "bad.json"
    bad.write_text("{\n  oops", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.json:2:3: malformed JSON"):
        load_scienceqa(problems, bad, "train")
    with pytest.raises(DataError, match=r"unknown split 'dev'; known splits: train, val"):
        load_scienceqa(problems, splits, "dev")
    with pytest.raises(DataError, match=r"problems\.json: 1 of 2 pids of split 'val'.*first: 9"):
        load_scienceqa(problems, splits, "val")
    data = load_scienceqa(problems, splits, "val", missing="skip")
    assert data.pids == ["2"] and data.missing == ["9"]
    broken = _write(tmp_path / "broken.json", {"1": {**_problem(), "choices": "ab"}})
    with pytest.raises(DataError, match=r"broken\.json: problem '1': field 'choices'"):
        load_scienceqa(broken, splits, "train", missing="skip")


def test_run_folder_jsonl(tmp_path):
    _write(tmp_path / "problems.json", {"1": _problem(), "2": _problem(image="image.png")})
    _write(tmp_path / "pid_splits.json", {"train": ["2", "1"]})
    out = tmp_path / "out" / "train.jsonl"
    summary = ScienceQAConverter().run(str(tmp_path), str(out), prompt_format="QCM-LEPA", with_meta=True)
    assert summary["records"] == 2 and summary["with_image"] == 1 and summary["missing"] == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in lines] == ["2", "1"] and lines[0]["image"] == "2/image.png"
    assert lines[0]["meta"]["prompt_format"] == "QCM-LEPA"
    with pytest.raises(DataError, match="has no problems.json"):
        ScienceQAConverter().run(str(out.parent), str(tmp_path / "x.jsonl"))


def test_registered():
    assert "scienceqa" in CONVERTERS.names()
    assert CONVERTERS.get("scienceqa") is ScienceQAConverter
