"""Golden SciCap conversions: hand-written figure records in three layouts, the expected text of every variant."""

from __future__ import annotations

import random

import pytest

from scitune.sources.converters.scicap import QUESTIONS, convert_scicap

FIGURES = [
    {"id": "g1", "image": "g1.png", "figure_type": "Bar Chart", "caption": "Figure 3: Accuracy of each method.",
     "ocr": ["Ours", "BERT", "0.9"], "paragraphs": ["Fig. 3 compares the methods.", "Ours wins."],
     "mentions": ["Fig. 3 compares the methods."]},
    {"figure-ID": "1001.0025v1-Figure2-1.png", "figure-type": "Graph Plot",  # SciCap release field names
     "0-originally-extracted": "Figure 2. Loss vs. epoch.", "Img-text": "loss epoch 0 10",
     "paragraph": "The loss falls (see figure 2).", "mention": [["As figure 2 shows, it converges."]]},
    {"id": "g3", "image": "g3.png", "caption": "Node diagram of the pipeline.", "ocr": [], "paragraphs": [],
     "mentions": []},
]  # fmt: skip

GOLDEN = {  # worked out by hand from the paper's Table 6 layout: type, caption / OCR (tab-joined) / paragraphs /
    # mentions, and every whole word "Fig"/"Figure" (any case) replaced by the type in variants with a T
    "C": ["Figure 3: Accuracy of each method.", "Figure 2. Loss vs. epoch.", "Node diagram of the pipeline."],
    "CT": ["Bar Chart Bar Chart 3: Accuracy of each method.", "Graph Plot Graph Plot 2. Loss vs. epoch.",
           "Image Node diagram of the pipeline."],
    "CTO": ["Bar Chart Bar Chart 3: Accuracy of each method.\nOurs\tBERT\t0.9",
            "Graph Plot Graph Plot 2. Loss vs. epoch.\nloss\tepoch\t0\t10",
            "Image Node diagram of the pipeline.\n"],
    "CTOM": ["Bar Chart Bar Chart 3: Accuracy of each method.\nOurs\tBERT\t0.9\nBar Chart. 3 compares the methods.\n"
             "Ours wins.\nBar Chart. 3 compares the methods.",
             "Graph Plot Graph Plot 2. Loss vs. epoch.\nloss\tepoch\t0\t10\nThe loss falls (see Graph Plot 2).\n"
             "As Graph Plot 2 shows, it converges.",
             "Image Node diagram of the pipeline.\n\n\n"],
}  # fmt: skip
EMPTY = {"C": {}, "CT": {"figure_type": ["g3"]}, "CTO": {"figure_type": ["g3"], "ocr": ["g3"]},
         "CTOM": {"figure_type": ["g3"], "ocr": ["g3"], "paragraphs": ["g3"], "mentions": ["g3"]}}  # fmt: skip


@pytest.mark.parametrize("variant", list(GOLDEN))
def test_golden(variant):
    records, report = convert_scicap(FIGURES, variant, seed=0)
    draw = random.Random(0)
    questions = [draw.choice(QUESTIONS) for _ in FIGURES]  # one seeded draw per record, as the authors do
    assert [r["id"] for r in records] == ["g1", "1001.0025v1-Figure2-1.png", "g3"]
    assert [r["image"] for r in records] == ["g1.png", "1001.0025v1-Figure2-1.png", "g3.png"]
    for record, question, answer in zip(records, questions, GOLDEN[variant]):
        assert record["conversations"] == [
            {"from": "human", "value": f"{question}\n<image>"},
            {"from": "gpt", "value": answer},
        ]
    assert {k: v for k, v in report["empty_ids"].items() if v} == EMPTY[variant]
    assert report["written"] == 3 and report["dropped"] == 0
