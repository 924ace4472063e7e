"""benchmarks/gpu_check.py: its budgets fit 8 minutes, its GPU commands are the intended ones, a failing or overrunning
section is recorded while the next still runs, and ``--dry-run`` passes end to end on CPU (the slow test)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_bench", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gc():
    return _load("gpu_check")


def test_budgets_fit_eight_minutes_and_cover_the_expected_times(gc):
    assert list(gc.SECTIONS) == ["tests", "throughput", "max_model"]
    total = sum(s.budget_s for s in gc.SECTIONS.values())
    assert total + 20 <= 8 * 60  # 20 s for start-up and the report
    for s in gc.SECTIONS.values():
        assert s.expected_s < s.budget_s and s.dry_expected_s < s.dry_budget_s
    assert gc.MAX_MODEL_MARGIN_S < gc.SECTIONS["max_model"].budget_s


def test_gpu_commands_run_the_intended_profiles(gc, tmp_path):
    tests = gc.section_command("tests", False, tmp_path, 90, None)
    assert tests[1:6] == ["-m", "pytest", "-m", "gpu", "tests/gpu"] and f"--junitxml={tmp_path / 'tests.xml'}" in tests
    thr = gc.section_command("throughput", False, tmp_path, 210, None)
    assert {"--gpu", "--configs", "pair"} <= set(thr) and "--profile" not in thr
    mm = gc.section_command("max_model", False, tmp_path, 160, None)
    assert mm[mm.index("--profile") + 1] == "gpu" and mm[mm.index("--start") + 1] == "lora=Llama-2-7B"
    assert float(mm[mm.index("--deadline-s") + 1]) == 160 - gc.MAX_MODEL_MARGIN_S
    dry = gc.section_command("max_model", True, tmp_path, 240, None)
    assert dry[dry.index("--profile") + 1] == "cpu-tiny" and "--start" not in dry
    assert gc.section_env(True)["CUDA_VISIBLE_DEVICES"] == "" and gc.section_env(True)["SCITUNE_TEST_DEVICE"] == "cpu"
    assert gc.section_env(False)["SCITUNE_TEST_DEVICE"] == "cuda"


def test_budget_overrides_are_checked(gc):
    def error(msg):
        raise SystemExit(msg)

    assert gc.parse_budgets("throughput=300", ["tests", "throughput"], False, error) == {"tests": 90, "throughput": 300}
    with pytest.raises(SystemExit, match="SECTION=SECONDS"):
        gc.parse_budgets("thruput=300", ["tests"], False, error)


def test_a_failed_and_an_overrunning_section_are_recorded_and_the_next_still_runs(gc, tmp_path, monkeypatch):
    py = sys.executable
    commands = {
        "tests": [py, "-c", "import sys; print('boom'); sys.exit(3)"],
        "throughput": [py, "-c", "import time; time.sleep(60)"],
        "max_model": [py, "-c", "pass"],
    }
    monkeypatch.setattr(gc, "section_command", lambda name, *args: commands[name])
    monkeypatch.setitem(gc.READERS, "max_model", lambda work: {"largest": {"full": "x"}, "problem": None})
    a = argparse.Namespace(dry_run=True, peak_tflops=None, argv=[])
    t0 = time.perf_counter()
    report = gc.run_check(list(commands), {"tests": 30, "throughput": 1, "max_model": 30}, a, tmp_path)
    assert time.perf_counter() - t0 < 30  # the sleeper was killed at its budget
    s = report["sections"]
    assert s["tests"]["status"] == "failed" and s["tests"]["error"].startswith("exit code 3")
    assert "boom" in s["tests"]["log_tail"]
    assert s["throughput"]["status"] == "timeout" and s["throughput"]["seconds"] < 20
    assert s["max_model"]["status"] == "ok" and s["max_model"]["results"] == {"largest": {"full": "x"}}
    assert report["status"] == "failed" and report["hardware"]["torch"]


def test_max_model_start_and_deadline_skip_trials_without_running_them(monkeypatch):
    mm = _load("max_model")
    names = [n for n, _ in mm.PROFILES["gpu"]["ladder"]]

    def error(msg):
        raise SystemExit(msg)

    assert mm.parse_start("lora=Llama-2-7B", ["full", "lora"], names, error) == {"lora": "Llama-2-7B"}
    assert mm.parse_start("Llama-2-7B", ["full", "lora"], names, error) == {"full": "Llama-2-7B", "lora": "Llama-2-7B"}
    with pytest.raises(SystemExit, match="--start"):
        mm.parse_start("lora=Llama-9B", ["full", "lora"], names, error)
    monkeypatch.setattr(mm, "run_trial", lambda *a: pytest.fail("no trial may start past the deadline"))
    rows, largest = mm.walk("gpu", "lora", "Llama-2-7B", {}, 3600, time.perf_counter() - 1)
    assert largest is None and [r["status"] for r in rows] == ["not tried"] * len(names)
    assert [r.get("skipped") for r in rows[:3]] == ["below --start", "below --start", "--deadline-s reached"]


def test_throughput_pair_is_the_baseline_and_plain_scitune_per_stage():
    tt = _load("train_throughput")
    pair = tt.jobs(("align", "finetune"), False, "pair")
    assert [(j["stage"], j["system"]) for j in pair] == [
        ("align", "hf-trainer"),
        ("align", "scitune"),
        ("finetune", "hf-trainer"),
        ("finetune", "scitune"),
    ]
    assert not any(j["packing"] or j["cache"] or j["compile"] for j in pair)
    assert len(tt.jobs(("align", "finetune"), True)) == 14  # the full grid is unchanged


def test_repeated_rounds_start_each_run_in_an_empty_folder(tmp_path):
    """scitune refuses to train over a finished run, so round 2 must not find round 1's run folder."""
    tt = _load("train_throughput")
    found = []

    def spawn(job, work, k):
        run = work / f"run{k}"
        found.append(run.exists())
        (run / "final").mkdir(parents=True)
        return {"stamps": [(0.0, 0.0), (1.0, 1.0)], "losses": [2.0], "lengths": [10, 12], "memory_mb": 1.0,
                "peak_rss_mb": 2.0}  # fmt: skip

    prof = tt.Profile(**{**tt.asdict(tt.TINY), "stages": ("finetune",), "warmup": 1, "steps": 1})
    meta = {"lengths": {"finetune": [10, 12]}, "peak_tflops": None}
    tt.spawn, real_spawn = spawn, tt.spawn
    try:
        rows = tt.measure(prof, tmp_path, {}, meta, repeats=2, threads=1, compiled=False, configs="pair")
    finally:
        tt.spawn = real_spawn
    assert found == [False, False, False, False] and len(rows) == 2


@pytest.mark.slow  # 12 Python processes (pytest, 4 throughput runs, 4 max_model trials, ...): ~3 min on 2 busy cores
def test_dry_run_passes_and_writes_every_section(tmp_path):
    out = tmp_path / "x.json"
    cmd = [sys.executable, str(BENCH / "gpu_check.py"), "--dry-run", "--out", str(out), "--work", str(tmp_path / "w")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] is True and report["status"] == "ok"
    assert {n: s["status"] for n, s in report["sections"].items()} == dict.fromkeys(
        ("tests", "throughput", "max_model"), "ok"
    )
    assert set(report["expected_s"]) == set(report["budget_s"]) == set(report["sections"])
    assert report["hardware"]["torch"] and report["hardware"]["transformers"]
    counts = report["sections"]["tests"]["results"]["counts"]
    assert counts["passed"] > 0 and counts["failed"] == counts["error"] == 0
    skipped = {t["name"]: t.get("message", "") for t in report["sections"]["tests"]["results"]["tests"]}
    assert "CUDA" in skipped["test_qlora_4bit_trains_a_step"]
    rows = report["sections"]["throughput"]["results"]["rows"]
    assert {(r["stage"], r["system"]) for r in rows} == {
        (st, sy) for st in ("align", "finetune") for sy in ("hf-trainer", "scitune")
    }
    assert all(r["samples_per_s"] > 0 and r["mfu"] > 0 for r in rows)
    for stage in ("align", "finetune"):  # same weights, same batches: the same first loss
        first = [r["loss_step1"] for r in rows if r["stage"] == stage]
        assert max(first) - min(first) < 1e-3, rows
    mm = report["sections"]["max_model"]["results"]
    assert mm["largest"]["full"] and mm["largest"]["lora"]
    assert {t["status"] for t in mm["trials"]} >= {"fits", "oom"}
