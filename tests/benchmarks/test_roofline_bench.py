"""benchmarks/roofline.py on tiny shapes: the result JSON has its keys, and the analytic FLOP count matches torch's
FLOP counter (`FlopCounterMode`) on a real forward and backward of scitune's model, in both stages."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def rl():
    spec = importlib.util.spec_from_file_location("roofline_bench", BENCH / "roofline.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_tiny_run_writes_the_table_and_its_flops_match_the_counter(rl, tmp_path):
    out = tmp_path / "roofline.json"
    argv = ["--profile", "tiny", "--threads", "1", "--stages", "finetune", "--systems", "scitune-pack"]
    assert rl.main([*argv, "--check-samples", "1", "--work", str(tmp_path / "w"), "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert {"hardware", "shapes", "flop_check", "flop_check_worst_rel_diff", "gemm", "rows", "wall_s"} <= set(rep)
    assert {"load_avg_start", "load_avg_end", "cpu"} <= set(rep["hardware"])
    assert {c["stage"] for c in rep["flop_check"]} == {"align", "finetune"}
    for c in rep["flop_check"]:  # within 2 % (they agree exactly: the CPU attention kernel gets torch's formula)
        assert c["counted"] > 0 and abs(c["analytic"] / c["counted"] - 1) < 0.02, c
    gemm = rep["gemm"]["1"]
    assert gemm["threads"] == 1 and gemm["peak_gflops_cpu"] == max(s["gflops_cpu"] for s in gemm["shapes"]) > 0
    assert [256, 256, 256] in [s["shape"] for s in gemm["shapes"]]  # the large square (tiny: 256)
    (row,) = rep["rows"]
    assert (row["stage"], row["system"], row["packing"], row["threads"]) == ("finetune", "scitune", True, 1)
    assert 0 < row["fraction_of_peak"] == round(row["gflops_cpu"] / gemm["peak_gflops_cpu"], 3)
    assert row["vs_hf_cpu_time"] is None and row["model_gflop_per_step"] > 0
    # the default data: the public SciCap/ScienceQA records, every one kept unless it exceeds the context
    data = rep["data"]
    assert data["kind"] == "real" and data["finetune"]["records"] + data["finetune"]["left_out_too_long"] == 100
    records = [json.loads(line) for line in Path(data["finetune"]["data"]).read_text().splitlines()]
    assert len(records) == data["finetune"]["records"] and 0 < sum("image" in r for r in records) < len(records)
    assert all((Path(data["finetune"]["image_root"]) / r["image"]).is_file() for r in records if "image" in r)


def test_real_records_keep_the_length_spread(rl, tmp_path):
    from real_data import real_records

    sets = real_records(tmp_path)
    assert {k: len(v[0]) for k, v in sets.items()} == {"align": 300, "finetune": 100}
    chars = sorted(sum(len(c["value"]) for c in r["conversations"]) for r in sets["finetune"][0])
    assert chars[-1] > 10 * chars[0]  # the spread that padding wastes compute on
    assert all((sets["align"][1] / r["image"]).is_file() for r in sets["align"][0])


def test_attention_counts_and_stage_passes(rl):
    s = rl.shapes(rl.TINY, 1024)
    ft, al = rl.sample_flops("finetune", s, 100, 40, 1), rl.sample_flops("align", s, 100, 40, 1)
    assert ft["vision"] == al["vision"] and ft["connector"] == al["connector"]
    assert ft["lm_head"] == 6 * 40 * s["d"] * s["vocab"] and al["lm_head"] == 4 * 40 * s["d"] * s["vocab"]
    no_image = rl.sample_flops("finetune", s, 100, 40, 0)
    assert no_image["vision"] == no_image["connector"] == 0 and no_image["llm"] == ft["llm"]
    # attention grows with the square of a sample's length, the linear layers linearly
    assert rl.sample_flops("align", s, 200, 40, 1)["llm"] - 2 * al["llm"] == s["layers"] * 14 * 100**2 * s["d"] * 2
