"""benchmarks/generate.py: ``--tiny`` runs the engine and HF ``generate`` end to end on a tiny model, prints the
table and writes a JSON with both systems at batch 1 and 8, the same greedy tokens on both sides, and the machine
description."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "generate.py"


def test_tiny_run_reports_both_systems_with_parity(tmp_path):
    out = tmp_path / "generate.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, str(BENCH), "--tiny", "--b1-prompts", "2", "--max-new-tokens", "6", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| workload | system |" in proc.stdout and "TTFT ms" in proc.stdout
    report = json.loads(out.read_text())
    assert (
        report["settings"] | {"model": "tiny", "max_new_tokens": 6, "b1_prompts": 2, "threads": 1, "greedy": True}
        == report["settings"]
    )
    rows = {(r["workload"], r["system"]): r for r in report["rows"]}
    assert set(rows) == {(w, s) for w in ("b1", "b8", "b8-mixed") for s in ("engine", "hf")}
    assert rows["b1", "engine"]["requests"] == 2 and rows["b8", "engine"]["requests"] == 8
    assert rows["b1", "hf"]["tokens"] == 12 and rows["b8", "hf"]["tokens"] == 48
    assert rows["b8-mixed", "hf"]["tokens"] < 48  # requests of different lengths
    for r in report["rows"]:
        assert r["tokens_per_s"] > 0 and r["tokens_per_cpu_s"] > 0 and r["ttft_ms"] > 0 and r["ttft_cpu_ms"] > 0
    for w in ("b1", "b8", "b8-mixed"):
        eng = rows[w, "engine"]
        assert eng["speedup"] > 0 and eng["speedup_cpu"] > 0 and eng["ttft_ratio"] > 0
    assert report["parity"] == {"b1": "2/2", "b8": "8/8", "b8-mixed": "8/8"}
    m = report["machine"]
    assert m["cpus"] == os.cpu_count() and m["torch_threads"] == 1
    assert len(m["load_average_before"]) == 3 and m["torch"] and m["transformers"] and m["python"]
