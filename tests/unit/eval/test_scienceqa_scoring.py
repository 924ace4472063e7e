"""ScienceQA scoring against hand-computed values on real problems (../shared/data/scienceqa)."""

from __future__ import annotations

import json

import pytest

from conftest import SHARED_DATA
from scitune.eval.scienceqa import (
    GROUPS,
    correct_by_pid,
    explanation_quality,
    lecture_frequency_table,
    parse_answer,
    read_llava_answers,
    read_scienceqa_results,
    score_scienceqa,
    split_explanation,
)
from scitune.io import DataError, read_json

SQA_DIR = SHARED_DATA / "scienceqa"
TWO = ["x", "y"]
THREE = ["x", "y", "z"]
FIVE = ["v", "w", "x", "y", "z"]


@pytest.fixture(scope="module")
def problems() -> dict:
    path = SQA_DIR / "problems_trainval_sample.json"
    if not path.exists():
        pytest.skip(f"shared ScienceQA sample not found at {path}")
    return read_json(path)


# ---------------------------------------------------------------- parse_answer: one test per LLaVA rule


def test_parse_rule1_bare_letter_exact():
    assert parse_answer("B", TWO) == 1
    assert parse_answer(" B", TWO) == -1  # LLaVA does not strip
    assert parse_answer("b", TWO) == -1


def test_parse_rule2_letter_dot_space_prefix():
    assert parse_answer("B. The snoring is loud.", TWO) == 1
    assert parse_answer("B.", TWO) == -1  # needs ". " (three characters at least)
    assert parse_answer("A. The answer is B.", TWO) == 0  # rule 2 comes before the regex


def test_parse_rule3_single_regex_match():
    assert parse_answer("LECTURE: x\nSOLUTION: y\n The answer is C.", THREE) == 2
    assert parse_answer("so The answer is C, clearly", THREE) == 2  # LLaVA's '.' is unescaped: any character
    assert parse_answer("The answer is C", THREE) == -1  # nothing after the letter
    assert parse_answer("The answer is C\n", THREE) == -1  # '.' does not match a newline
    assert parse_answer("ANSWER: C.", THREE) == -1  # LEPA tail alone is not parsed by LLaVA


def test_parse_multiple_matches_fail_even_when_equal():
    assert parse_answer("The answer is A. The answer is A.", TWO) == -1
    assert parse_answer("The answer is A. Or The answer is B.", TWO) == -1


def test_parse_letter_outside_choices_fails():
    assert parse_answer("C", TWO) == -1
    assert parse_answer("C. maybe", TWO) == -1
    assert parse_answer("The answer is F.", FIVE) == -1
    assert parse_answer("E", FIVE) == 4


def test_parse_nothing():
    assert parse_answer("FAILED", TWO) == -1
    assert parse_answer("", TWO) == -1


# ---------------------------------------------------------------- accuracy and groups on real problems

SPLIT = ["1", "2", "6", "18", "9", "35", "56", "30"]
PREDICTIONS = {
    "1": "A",  # answer 0: right
    "2": "The answer is A.",  # answer 1: wrong
    "6": 0,  # index, answer 0: right
    # "18" missing: wrong
    "9": "LECTURE: l\nSOLUTION: s\n###\nANSWER: B.\n The answer is B.",  # answer 1: right
    "35": "The answer is E.",  # 4 choices: unparsable, wrong
    "56": 2,  # answer 2: right
    "30": "A. 5 kilograms",  # answer 0: right
    "999": "A",  # not in the split: ignored
}


def test_score_overall_and_groups(problems):
    s = score_scienceqa(problems, PREDICTIONS, SPLIT)
    assert (s["correct"], s["count"]) == (5, 8)
    assert s["acc"] == pytest.approx(62.5)
    # hand tally: NAT {2 x, 18 x, 30 v}; SOC {1 v, 35 x, 56 v}; LAN {6 v, 9 v}; TXT (hint) {2 x, 18 x, 56 v, 30 v};
    # IMG {1 v, 2 x, 35 x, 56 v}; NO {6 v, 9 v}; G1-6 {1 v, 9 v, 35 x, 30 v}; G7-12 {2 x, 6 v, 18 x, 56 v}
    expected = {
        "NAT": (1, 3),
        "SOC": (2, 3),
        "LAN": (2, 2),
        "TXT": (2, 4),
        "IMG": (2, 4),
        "NO": (2, 2),
        "G1-6": (3, 4),
        "G7-12": (2, 4),
    }
    assert {g: (t["correct"], t["count"]) for g, t in s["groups"].items()} == expected
    assert tuple(s["groups"]) == GROUPS
    assert s["table"] == {
        "Avg": "62.50",
        "NAT": "33.33",
        "SOC": "66.67",
        "LAN": "100.00",
        "TXT": "50.00",
        "IMG": "50.00",
        "NO": "100.00",
        "G1-6": "75.00",
        "G7-12": "50.00",
    }
    assert s["groups"]["NAT"]["acc"] == pytest.approx(100 / 3)


def test_score_results_are_indices(problems):
    s = score_scienceqa(problems, PREDICTIONS, SPLIT)
    assert s["results"] == {"1": 0, "2": 0, "6": 0, "18": -1, "9": 1, "35": -1, "56": 2, "30": 0}
    assert correct_by_pid(problems, s["results"]) == {
        "1": True,
        "2": False,
        "6": True,
        "18": False,
        "9": True,
        "35": False,
        "56": True,
        "30": True,
    }


def test_score_topic_category_grade(problems):
    s = score_scienceqa(problems, PREDICTIONS, SPLIT)
    assert (s["by_topic"]["geography"]["correct"], s["by_topic"]["geography"]["count"]) == (1, 2)  # 1 v, 35 x
    assert s["by_topic"]["economics"]["acc_str"] == "100.00"
    assert s["by_topic"]["biology"]["acc_str"] == "0.00"
    assert s["by_category"]["State capitals"]["acc_str"] == "0.00"
    assert s["by_category"]["Geography"]["acc_str"] == "100.00"
    assert (s["by_grade"]["grade8"]["correct"], s["by_grade"]["grade8"]["count"]) == (2, 3)  # 2 x, 6 v, 56 v


def test_text_and_image_groups_overlap(problems):
    # pid 2 has a hint and an image: it counts in TXT and in IMG, never in NO
    s = score_scienceqa(problems, {"2": 1}, ["2"])
    assert s["groups"]["TXT"]["count"] == s["groups"]["IMG"]["count"] == 1
    assert s["groups"]["NO"]["count"] == 0


def test_empty_group_and_all_missing(problems):
    s = score_scienceqa(problems, {}, ["6", "8"])  # two language questions, no predictions
    assert (s["correct"], s["count"], s["table"]["Avg"]) == (0, 2, "0.00")
    assert s["groups"]["NAT"] == {"correct": 0, "count": 0, "acc": None, "acc_str": "-"}


def test_unknown_split_pid_raises(problems):
    with pytest.raises(DataError, match="'nope'"):
        score_scienceqa(problems, {}, ["nope"])


def test_bad_prediction_type_raises(problems):
    with pytest.raises(TypeError):
        score_scienceqa(problems, {"1": True}, ["1"])


# ---------------------------------------------------------------- readers


def test_read_llava_answers(tmp_path):
    path = tmp_path / "answers.jsonl"
    lines = [
        {
            "question_id": "6",
            "prompt": "p",
            "text": "The answer is A.",
            "answer_id": "x",
            "model_id": "m",
            "metadata": {},
        },
        {"question_id": 7, "prompt": "p", "text": "B", "answer_id": "y", "model_id": "m", "metadata": {}},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert read_llava_answers(path) == {"6": "The answer is A.", "7": "B"}


@pytest.mark.parametrize(
    ("second_line", "message"),
    [
        ('{"question_id": "6", "text": "A"}', "duplicate question_id '6' \\(first on line 1\\)"),
        ('{"question_id": "8"}', "'text' must be a string"),
        ('{"text": "A"}', "'question_id'"),
        ('{"question_id": "8", "text": ', "malformed JSON"),
    ],
)
def test_read_llava_answers_errors_name_file_and_line(tmp_path, second_line, message):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"question_id": "6", "text": "A"}\n' + second_line + "\n")
    with pytest.raises(DataError, match=f"answers.jsonl:2: .*{message}"):
        read_llava_answers(path)


def test_read_scienceqa_results(tmp_path, problems):
    path = tmp_path / "result.json"
    path.write_text(
        json.dumps(
            {"acc": 50.0, "correct": 1, "count": 2, "results": {"6": 0, "8": -1}, "outputs": {"6": "A", "8": "?"}}
        )
    )
    r = read_scienceqa_results(path)
    assert (r.results, r.outputs, r.acc, r.correct, r.count) == ({"6": 0, "8": -1}, {"6": "A", "8": "?"}, 50.0, 1, 2)
    s = score_scienceqa(problems, r.results, ["6", "8"])  # 6: answer 0 right; 8: answer 1 wrong
    assert s["table"]["Avg"] == "50.00"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"results": {"6": "A"}}, "results\\['6'\\]: expected an option index"),
        ({"results": {"6": True}}, "results\\['6'\\]"),
        ({"outputs": {}}, "'results' must be an object"),
        ({"results": {}, "outputs": {"6": 1}}, "outputs\\['6'\\]"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_read_scienceqa_results_errors(tmp_path, payload, message):
    path = tmp_path / "result.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(DataError, match=f"result.json: {message}"):
        read_scienceqa_results(path)


# ---------------------------------------------------------------- Table 4


def test_lecture_frequency_table(problems):
    # lecture counts in this training subset: 2/3/68 share one lecture (3), 38 -> 1, 37/64 -> 2, 33/44 -> 2, 35 empty
    train = {pid: problems[pid] for pid in ["2", "3", "68", "38", "37", "64", "33", "44", "35"]}
    # test: 81/148 share 2's lecture (3); 18 shares 38's (1); 147/227 share 33's (2); 6's lecture is not in train (0);
    # 45 and 52 have no lecture
    test = {pid: problems[pid] for pid in ["81", "148", "18", "147", "227", "6", "45", "52"]}
    correct = {"81": True, "148": True, "18": True, "147": True, "227": False, "6": False, "45": True}
    table = lecture_frequency_table(train, test, correct, bins=(1, 2, 3))
    # <=1: {18 v, 6 x}; <=2: + {147 v, 227 x}; <=3: + {81 v, 148 v}
    assert [(r["max_count"], r["questions"], r["correct"], r["acc_str"]) for r in table["rows"]] == [
        (1, 2, 1, "50.00"),
        (2, 4, 2, "50.00"),
        (3, 6, 4, "66.67"),
    ]
    assert (table["no_lecture"], table["unseen"]) == (2, 1)


def test_lecture_frequency_default_bins_and_validation(problems):
    train = {pid: problems[pid] for pid in ["2", "3", "68"]}
    table = lecture_frequency_table(train, {"81": problems["81"]}, {})  # missing correctness counts as wrong
    assert [(r["max_count"], r["questions"], r["acc_str"]) for r in table["rows"]] == [
        (5, 1, "0.00"),
        (10, 1, "0.00"),
        (25, 1, "0.00"),
        (50, 1, "0.00"),
    ]
    with pytest.raises(ValueError, match="increasing"):
        lecture_frequency_table(train, {}, {}, bins=(10, 5))


# ---------------------------------------------------------------- Table 5


def test_split_explanation_matches_llava_lepa_reference(problems):
    path = SQA_DIR / "llava_reference" / "llava_val_QCM-LEPA.json"
    records = json.loads(path.read_text())
    for rec in records:
        parts = split_explanation(rec["conversations"][1]["value"])
        prob = problems[rec["id"]]
        assert parts.marked
        assert parts.lecture == prob["lecture"].strip()
        assert parts.solution == prob["solution"].strip()


@pytest.mark.parametrize("fmt", ["LEA", "ALE"])
def test_split_explanation_unmarked_formats(problems, fmt):
    records = json.loads((SQA_DIR / "llava_reference" / f"llava_val_QCM-{fmt}.json").read_text())
    for rec in records:
        parts = split_explanation(rec["conversations"][1]["value"])
        prob = problems[rec["id"]]
        assert not parts.marked and parts.lecture == parts.solution == ""
        assert parts.explanation == (prob["lecture"] + " " + prob["solution"]).strip()


def test_split_explanation_scitune_output():
    text = "Assistant: LECTURE: Climate data.\nA bar graph.\nSOLUTION: Look at the graph.\n The answer is C.\n"
    parts = split_explanation(text)
    assert (parts.lecture, parts.solution) == ("Climate data.\nA bar graph.", "Look at the graph.")
    assert parts.explanation == "Climate data.\nA bar graph. Look at the graph."
    assert split_explanation("ANSWER: B.\n The answer is B.").explanation == ""


TINY = {
    "p1": {"lecture": "a b c d", "solution": "e f"},
    "p2": {"lecture": "x y", "solution": ""},
}
TINY_OUT = {
    "p1": "LECTURE: a b c d\nSOLUTION: e g\n###\nANSWER: A.",
    "p2": "Assistant: SOLUTION: z\n The answer is B.",
}


def test_explanation_quality_hand_computed():
    q = explanation_quality(TINY, TINY_OUT, {"p1": True, "p2": False})
    lec, sol, exp = q["all"]["lecture"], q["all"]["solution"], q["all"]["explanation"]
    # lecture: p1 identical (1.0 everywhere); p2 generated no lecture: BLEU 0, ROUGE skipped, similarity 0
    assert lec["count"] == 2 and lec["rouge_count"] == 1
    assert lec["bleu1"] == pytest.approx(0.5) and lec["bleu4"] == pytest.approx(0.5)
    assert lec["rouge_l"] == pytest.approx(1.0) and lec["similarity"] == pytest.approx(0.5)
    # solution: only p1 (p2's gold is empty): "e g" vs "e f": BLEU-1 1/2, LCS 1 of 2, cosine 1/2
    assert sol["count"] == 1
    assert (sol["bleu1"], sol["rouge_l"], sol["similarity"]) == pytest.approx((0.5, 0.5, 0.5))
    assert sol["bleu4"] < 1e-50  # no bigram match: nltk's method0 gives ~0, not exactly 0
    # explanation: p1 "a b c d e g" vs "a b c d e f": p_n = 5/6, 4/5, 3/4, 2/3; p2 "z" vs "x y": all 0
    assert exp["count"] == exp["rouge_count"] == 2
    assert exp["bleu1"] == pytest.approx((5 / 6) / 2)
    assert exp["bleu4"] == pytest.approx((1 / 3) ** 0.25 / 2)
    assert exp["rouge_l"] == pytest.approx((5 / 6) / 2)
    assert exp["similarity"] == pytest.approx((5 / 6) / 2)
    # split by correctness
    assert q["correct"]["lecture"]["bleu1"] == pytest.approx(1.0)
    assert q["incorrect"]["lecture"]["rouge_l"] is None
    assert q["incorrect"]["solution"] == {
        "count": 0,
        "bleu1": None,
        "bleu4": None,
        "rouge_l": None,
        "rouge_count": 0,
        "similarity": None,
    }
    assert q["questions"] == {"all": 2, "correct": 1, "incorrect": 1}
    assert (q["unmarked"], q["similarity"]) == (0, "bow-cosine")


def test_explanation_quality_unmarked_format_scores_only_explanation():
    outputs = {"p1": "a b c d e f The answer is A."}
    q = explanation_quality(TINY, outputs, {"p1": True}, marked_format=False)
    assert q["all"]["lecture"]["count"] == q["all"]["solution"]["count"] == 0
    assert q["all"]["explanation"]["bleu4"] == pytest.approx(1.0)
    assert q["unmarked"] == 1


def test_explanation_quality_requires_known_pids():
    with pytest.raises(DataError, match="no correctness"):
        explanation_quality(TINY, {"p1": "x"}, {})
    with pytest.raises(DataError, match="not in the problems"):
        explanation_quality(TINY, {"p9": "x"}, {"p9": True})
