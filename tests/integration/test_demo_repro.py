"""Same seed and same thread count give the same demo numbers: two fresh `--size test` runs in separate folders
produce identical benchmark results and an identical first section of report.md (timings and paths aside)."""

from __future__ import annotations

import json
from pathlib import Path

FOLDERS = ("figure-type", "caption", "scifig-mcq", "scifig-mcq-blind")


def _numbers(out: Path) -> dict:
    results = {f: json.loads((out / "eval" / f / "results.json").read_text()) for f in FOLDERS}
    head = json.loads((out / "steps" / "8-evaluate.json").read_text())["summary"]["headline"]
    losses = {s: json.loads((out / "steps" / f"{s}.json").read_text())["summary"]["losses"]
              for s in ("3-clip", "4-lm", "6-align", "7-finetune")}  # fmt: skip
    return {"summary": {f: r["summary"] for f, r in results.items()}, "headline": head, "losses": losses}


def _first_section(out: Path) -> str:
    text = (out / "report.md").read_text()
    return text[text.index("## ScienceQA accuracy") : text.index("Total step time")]


def test_same_seed_and_threads_give_the_same_numbers(tmp_path):
    from scitune.demo import DemoConfig, run_demo

    outs = [tmp_path / f"run{i}" for i in range(2)]
    for out in outs:
        run_demo(DemoConfig(out=str(out), size="test", progress=False, threads=1, seed=3, ocr="truth"))
    a, b = (_numbers(o) for o in outs)
    assert a == b
    assert a["headline"]["CTOM"]["scienceqa"]["image"] is not None
    first = [_first_section(o) for o in outs]
    assert first[0] == first[1] and "| chance (random letter; random type) |" in first[0]
    report = (outs[0] / "report.md").read_text()
    assert "seed 3 · torch threads 1 · scitune " in report and "torch " in report
    assert report.index("## ScienceQA accuracy") < report.index("## Steps")  # the paper's table leads
    assert (outs[0] / "report.html").stat().st_size > 10_000  # plots embedded
