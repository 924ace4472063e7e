"""benchmarks/max_model.py: a tiny trial really trains (finite loss), a tiny memory budget reads as OOM, a bug as error.

The two trials are child processes of the script (as in a real run), started together to keep the test short; full
finetuning, so the children need not import peft.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "max_model.py"


def _load():
    spec = importlib.util.spec_from_file_location("max_model_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def trials():
    if not Path("/proc/self/status").exists():
        pytest.skip("the CPU memory budget reads /proc/self/status (Linux)")
    mm = _load()
    ladder = dict(mm.PROFILES["cpu"]["ladder"])
    smallest, mid = ladder["cpu-h64-L2"], ladder["cpu-h512-L4"]
    jobs = {
        # seq 64 = 16 image tokens + 48 labelled text tokens; 1 GiB is far above what this model needs
        "fits": mm.make_job("cpu", "full", "cpu-h64-L2", smallest, seq_len=64, micro_batch=2, memory_gib=1.0),
        # 17 M parameters trained fully need ~0.3 GiB: 0.05 GiB of address space cannot hold them
        "oom": mm.make_job("cpu", "full", "cpu-h512-L4", mid, seq_len=64, micro_batch=1, memory_gib=0.05),
    }
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {k: pool.submit(mm.run_trial, job, 120) for k, job in jobs.items()}
        return mm, {k: f.result() for k, f in futures.items()}


def test_tiny_trial_fits_and_trains(trials):
    mm, results = trials
    r = results["fits"]
    assert r["status"] == "fits", r.get("traceback") or r["message"]
    assert len(r["losses"]) == 2 and all(math.isfinite(x) for x in r["losses"])
    assert 0.5 * math.log(4096) < r["losses"][0] < 2 * math.log(4096)  # random init: about ln(vocab)
    assert r["counts"]["llm_params"] == mm.llm_params(mm.PROFILES["cpu"]["ladder"][0][1])
    assert 0 < r["counts"]["trainable_params"]
    assert len(r["step_s"]) == 2 and r["peak_bytes"] > 0


def test_tiny_budget_reads_as_oom_not_error(trials):
    r = trials[1]["oom"]
    assert r["status"] == "oom", r.get("traceback") or r["message"]
    assert "allocat" in r["message"].lower() or "MemoryError" in r["message"]
    assert r["counts"]["llm_params"] > 16_000_000  # counted on the meta device before the budget bit


def test_only_allocation_failures_read_as_oom():
    mm = _load()
    assert (
        mm.classify(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes")) == "oom"
    )
    assert mm.classify(MemoryError()) == "oom"
    assert mm.classify(type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory")) == "oom"
    assert mm.classify(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) == "error"
    assert mm.classify(ValueError("cannot allocate a name")) == "error"  # only RuntimeErrors are read for words
    assert mm.classify(FloatingPointError("non-finite loss [nan]")) == "error"
