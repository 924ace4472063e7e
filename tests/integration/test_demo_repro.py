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


def test_same_seed_and_threads_give_the_same_numbers(tmp_path, monkeypatch, capsys):
    """The first run trains the micro CLIP in a second process beside the LM (2 CPUs), the second one after it
    (1 CPU): the numbers do not depend on it."""
    import scitune.threads
    from scitune.demo import DemoConfig, run_demo

    outs = [tmp_path / f"run{i}" for i in range(2)]
    for cpus, out in zip((2, 1), outs):
        monkeypatch.setattr(scitune.threads, "usable_cpus", lambda cpus=cpus: cpus)
        run_demo(DemoConfig(out=str(out), size="test", progress=False, threads=1, seed=3, ocr="truth"))
    printed = capsys.readouterr().out
    assert printed.count("3-clip ... (in a second process, beside 4-lm)") == 1  # the first run only
    a, b = (_numbers(o) for o in outs)
    assert a == b
    assert a["headline"]["CTOM"]["scienceqa"]["image"] is not None
    first = [_first_section(o) for o in outs]
    assert first[0] == first[1] and "| chance (random letter; random type) |" in first[0]
    report = (outs[0] / "report.md").read_text()
    assert "seed 3 · torch threads 1 · scitune " in report and "torch " in report
    assert report.index("## ScienceQA accuracy") < report.index("## Steps")  # the paper's table leads
    assert (outs[0] / "report.html").stat().st_size > 10_000  # plots embedded
