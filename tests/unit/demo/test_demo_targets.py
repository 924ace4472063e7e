"""The demo's stage-2 targets name the chosen option's letter right after the choice, and the official ScienceQA
scorer reads the right option from them; the micro LM's letter drills name a random choice and its own letter."""

from __future__ import annotations

import re

import pytest

from scitune.demo.steps import letter_drills, with_letter
from scitune.eval.scienceqa import parse_answer
from scitune.sources.converters.scienceqa import OPTIONS, convert_scienceqa


def problem(solution: str, choices: list[str], answer: int) -> dict:
    return {"question": "How many bars are shown?", "hint": "", "choices": choices, "answer": answer,
            "image": "image.png", "lecture": "Bar charts compare values.", "solution": solution, "subject": "s",
            "topic": "t", "category": "c", "grade": "grade3"}  # fmt: skip


@pytest.mark.parametrize(
    ("solution", "want"),
    [
        ("There is one bar for each of a, b. So, the answer is 2.", "There is one bar for each of a, b. So, the "
         "answer is 2 (C)."),
        ("All bars are 2.", "All bars are 2. So, the answer is 2 (C)."),
    ],
)  # fmt: skip
def test_solution_names_the_letter_after_the_choice(solution, want):
    p = problem(solution, ["4", "3", "2", "5"], 2)
    assert with_letter(p)["solution"] == want
    assert p["solution"] == solution  # the input is not changed


def test_official_scorer_reads_the_converted_target():
    p = with_letter(problem("So, the answer is 3.", ["4", "3", "2", "5"], 1))
    rec = convert_scienceqa({"x": p}, ["x"], "QCM-EA")[0]
    target = rec["conversations"][1]["value"]
    assert target.endswith("So, the answer is 3 (B). The answer is B.")
    assert parse_answer(target, p["choices"]) == 1  # one "The answer is X." match: the lowercase one is not read


def test_drills_name_a_random_choice_and_its_own_letter():
    problems = {f"p{i}": problem("So, the answer is 2.", ["4", "3", "2", "5"], 2) for i in range(200)}
    drills = letter_drills(problems, list(problems), "QCM-EA", seed=0, per_problem=1)
    assert len(drills) == 200 and letter_drills(problems, list(problems), "QCM-EA", 0, 0) == []
    correct = 0
    for d in drills:
        question, answer = (t["value"] for t in d["conversations"])
        options = dict(re.findall(r"\(([A-E])\) (\S+)", question))
        value, letter, again = re.fullmatch(r"So, the answer is (\S+) \(([A-E])\)\. The answer is ([A-E])\.",
                                            answer).groups()  # fmt: skip
        assert options[letter] == value and again == letter and set(options) == set(OPTIONS[:4])
        correct += value == "2"
    assert 20 < correct < 80  # the named choice is drawn at random, not the keyed answer (expected 50)
    assert drills == letter_drills(problems, list(problems), "QCM-EA", seed=0, per_problem=1)  # seeded
