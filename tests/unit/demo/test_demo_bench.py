"""benchmarks/demo.py: the README's demo block is rewritten from result JSONs (and only it); --load processes start
busy and are stopped."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("demo_bench", REPO / "benchmarks" / "demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def result(wall: float, load_procs: int, sqa: float) -> dict:
    head = {"zero_shot": {"a {}": 12.0, "a {} from a scientific paper": 15.5},
            "CTOM": {"scienceqa": {"image": sqa, "blind": 30.25}, "figure_type_acc": 99.5, "caption_bleu": 0.4512,
                     "caption_rouge_l": 0.6, "figure_reading": {"image": 60.1, "blind": 35.0, "chance": 26.8}}}  # fmt: skip
    return {"info": {"wall_s": wall, "load_procs": load_procs, "load_mean": 1.0 + load_procs, "threads": 1, "cpus": 2,
                     "seed": 0, "versions": "scitune 0.1"},
            "steps": {"1-data": {"seconds": 50.0}, "8-evaluate": {"seconds": 9.4}}, "headline": head,
            "targets": {"a": True, "b": wall < 600}}  # fmt: skip


def test_readme_block_is_rewritten_from_the_jsons(bench, tmp_path):
    files = [tmp_path / "demo-micro.json", tmp_path / "demo-micro-load2.json"]
    files[0].write_text(json.dumps(result(280.0, 0, 57.125)))
    files[1].write_text(json.dumps(result(590.0, 2, 57.125)))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{bench.START}\nold table\n{bench.END}\nafter\n")
    bench.paste_readme(files, readme)
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n") and text.endswith(f"{bench.END}\nafter\n") and "old table" not in text
    block = text.split(bench.START)[1].split(bench.END)[0]
    assert "| no added load, load avg 1.0 | +2 busy processes, load avg 3.0 |" in block
    assert "| **total wall (s)** | **280** | **590** |" in block
    assert "| ScienceQA, official letter rule: with the figure (%) | **57.12** | **57.12** |" in block
    assert "| figure type, CLIP zero-shot best prompt (%) | 15.5 | 15.5 |" in block
    assert "| step 8-evaluate (s) | 9 | 9 |" in block
    assert "| targets met | 2 of 2 | 2 of 2 |" in block
    bench.paste_readme(files, readme)  # idempotent
    assert readme.read_text() == text


def test_readme_without_markers_is_refused(bench):
    with pytest.raises(ValueError, match="demo-table:start"):
        bench.replace_block("no markers here", "table")
    with pytest.raises(ValueError, match="no demo benchmark results"):
        bench.readme_table([])


def test_load_processes_spin_and_stop(bench):
    import time

    procs = bench.start_load(2)
    try:
        time.sleep(0.5)
        assert all(p.poll() is None for p in procs)
    finally:
        bench.stop_load(procs)
    assert all(p.returncode is not None for p in procs)
