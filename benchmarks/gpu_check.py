"""One prepared GPU check: the GPU tests, the training throughput table with MFU against the HF baseline, and the
largest-model probe, on one GPU in under 8 minutes, written to one JSON.

    python benchmarks/gpu_check.py              # one CUDA GPU -> benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --dry-run    # CPU, tiny shapes, the same code paths (CI) -> gpu_check_dry_run.json
    python benchmarks/gpu_check.py --sections tests,max_model --budget-s max_model=300

Each section runs as its own subprocess (the scripts and tests as they are run by hand) under a time budget; a
section that fails or runs out of time is recorded (status, error, seconds) and the next one still runs. The exit
status is 1 when a section did not finish "ok" (a skipped test is not a failure).

Expected runtime per section on one H100 80GB. These are estimates: no GPU run has happened yet. The budget kills a
section (max_model is told to stop starting trials 15 s before its budget ends, so it still writes its table):

    section     expected  budget  what runs
    tests           60 s    90 s  pytest -m gpu tests/gpu, SCITUNE_TEST_DEVICE=cuda: bf16 run + checkpoint reload,
                                  sdpa vs eager (and flash_attention_2 if installed), QLoRA 4-bit, activation offload
    throughput     180 s   210 s  train_throughput.py --gpu --configs pair: align and finetune, scitune vs HF Trainer
                                  (TinyLlama-1.1B shape + CLIP-L/14-336 shape, global batch 64), 2 warmup + 5 timed
                                  steps each; samples/s, tokens/s, peak memory, MFU against the GPU's bf16 peak
    max_model      150 s   160 s  max_model.py --profile gpu: full finetune walks up from TinyLlama-1.1B, LoRA from
                                  Llama-2-7B, each until the first OOM (about 6 trials on 80 GB)
    total          390 s   460 s  (+ about 10 s of start-up; 8 min = 480 s)

``--dry-run`` runs the same sections on CPU with tiny shapes (CUDA hidden from every subprocess): the tests with
SCITUNE_TEST_DEVICE=cpu (QLoRA and FlashAttention skip with their reasons), train_throughput.py --profile tiny (MFU
against a nominal 1 TFLOP/s, only to run that code) and max_model.py --profile cpu-tiny (one shape fits 0.5 GiB, one
does not). Measured on the development machine's 2 shared cores at load average 6-8: tests 20-40 s, throughput
70-130 s, max_model 60-95 s, 2:44-4:10 in all, of which about 80 s is CPU time (12 Python processes start, each
importing torch and transformers); see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DRY_PEAK_TFLOPS = 1.0  # a nominal peak for the dry run's MFU column: it runs the formula, it measures nothing


@dataclass(frozen=True)
class Section:
    """One section: expected and budgeted seconds on one H100 (``gpu``) and in the dry run on 2 CPU cores (``dry``)."""

    name: str
    expected_s: float
    budget_s: float
    dry_expected_s: float
    dry_budget_s: float


SECTIONS = {
    s.name: s
    for s in (
        Section("tests", expected_s=60, budget_s=90, dry_expected_s=35, dry_budget_s=180),
        Section("throughput", expected_s=180, budget_s=210, dry_expected_s=120, dry_budget_s=300),
        Section("max_model", expected_s=150, budget_s=160, dry_expected_s=80, dry_budget_s=240),
    )
}
EXPECTED_NOTE = {
    "gpu": "one H100 80GB: estimates, no GPU run has happened yet",
    "dry": "dry run: measured on the development machine, 2 shared CPU cores",
}
MAX_MODEL_MARGIN_S = 15  # max_model stops starting trials this long before its budget, to print and write its table


# ---------------------------------------------------------------- the commands of each section
def section_command(name: str, dry: bool, work: Path, budget: float, peak_tflops: float | None) -> list[str]:
    """The subprocess that runs section ``name``; its results land in ``work`` (``<name>.json`` / ``.xml``)."""
    py = sys.executable
    if name == "tests":
        return [py, "-m", "pytest", "-m", "gpu", "tests/gpu", "-q", "-rA", "-p", "no:cacheprovider",
                f"--junitxml={work / 'tests.xml'}", f"--basetemp={work / 'pytest'}"]  # fmt: skip
    if name == "throughput":
        cmd = [py, str(HERE / "train_throughput.py"), "--configs", "pair", "--out", str(work / "throughput.json"),
               "--work", str(work / "throughput")]  # fmt: skip
        if dry:
            return [*cmd, "--profile", "tiny", "--threads", "1", "--peak-tflops", str(DRY_PEAK_TFLOPS)]
        peak = ["--peak-tflops", str(peak_tflops)] if peak_tflops else []
        return [*cmd, "--gpu", "--warmup", "2", "--steps", "5", *peak]
    if name == "max_model":
        cmd = [py, str(HERE / "max_model.py"), "--modes", "full,lora", "--out", str(work / "max_model.json"),
               "--deadline-s", str(max(1.0, budget - MAX_MODEL_MARGIN_S))]  # fmt: skip
        if dry:
            return [*cmd, "--profile", "cpu-tiny", "--threads", "1"]
        return [*cmd, "--profile", "gpu", "--start", "lora=Llama-2-7B"]
    raise KeyError(name)


def section_env(dry: bool) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["SCITUNE_TEST_DEVICE"] = "cpu" if dry else "cuda"
    if dry:  # CPU only, even on a machine with a GPU; one thread, as the CI machine's cores are shared
        env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    return env


def run_command(cmd: list[str], env: dict[str, str], budget: float, log: Path) -> tuple[int | None, float]:
    """Run ``cmd`` in its own process group with output to ``log``; kill the group past ``budget`` seconds.

    Returns (exit code, or None when the budget ran out; seconds)."""
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the section's own children (trials, data workers) too
            proc.wait()
            rc = None
    return rc, round(time.perf_counter() - t0, 1)


# ---------------------------------------------------------------- reading each section's results
def read_tests(work: Path) -> dict[str, Any]:
    """Counts and per-test outcomes from pytest's JUnit XML; "ok" needs at least one passed test and no failure."""
    root = ET.parse(work / "tests.xml").getroot()
    cases = []
    for case in root.iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (node.get("message") or "")[:500]
                break
        cases.append({"name": case.get("name"), "outcome": outcome, "seconds": round(float(case.get("time", 0)), 2),
                      **({"message": message} if message else {})})  # fmt: skip
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error", "skipped")}
    problem = None
    if counts["failed"] or counts["error"]:
        problem = f"{counts['failed']} failed, {counts['error']} errors"
    elif not counts["passed"]:
        problem = "no test passed (all skipped: is the device visible?)"
    return {"counts": counts, "tests": cases, "problem": problem}


def read_throughput(work: Path) -> dict[str, Any]:
    """The rows of train_throughput.py's JSON; "ok" needs both systems in both stages with samples/s > 0."""
    rep = json.loads((work / "throughput.json").read_text())
    keys = ("stage", "system", "samples_per_s", "tokens_per_s", "speedup", "mfu", "peak_memory_mb", "loss_step1")
    rows = [{k: r.get(k) for k in keys} for r in rep["rows"]]
    have = {(r["stage"], r["system"]) for r in rows if (r["samples_per_s"] or 0) > 0}
    want = {(st, sy) for st in ("align", "finetune") for sy in ("hf-trainer", "scitune")}
    problem = f"missing or zero rows: {sorted(want - have)}" if want - have else None
    prof = rep["profile"]
    return {"rows": rows, "profile": prof["name"], "precision": prof["precision"], "global_batch": prof["global_batch"],
            "warmup_steps": prof["warmup"], "timed_steps": prof["steps"], "params": rep["params"],
            "peak_bf16_tflops": rep["peak_bf16_tflops"], "mfu_formula": rep["mfu_formula"],
            "hardware": rep["hardware"], "script_wall_s": rep["wall_s"], "problem": problem}  # fmt: skip


def read_max_model(work: Path) -> dict[str, Any]:
    """The largest shape per mode and every trial of max_model.py's JSON; "ok" needs a shape that fits."""
    rep = json.loads((work / "max_model.json").read_text())
    trials = []
    for t in rep["trials"]:
        row = {"mode": t["mode"], "name": t["name"], "llm_params": t["llm_params"], "status": t["status"]}
        if t.get("peak_bytes") is not None:
            row["peak_gib"] = round(t["peak_bytes"] / 2**30, 2)
        if t["status"] == "fits":
            row["step_s"] = t["step_s"][-1]
        row.update({k: t[k] for k in ("trial_s", "skipped") if k in t})
        if t["status"] not in ("fits", "not tried"):
            row["message"] = t.get("message", "")[:300]
        trials.append(row)
    problem = None if any(rep["largest"].values()) else "no shape fits"
    if any(t["status"] == "error" for t in trials):
        problem = "a trial failed with an error (not an OOM)"
    return {"largest": rep["largest"], "trials": trials, "settings": rep["settings"], "problem": problem}


READERS = {"tests": read_tests, "throughput": read_throughput, "max_model": read_max_model}


def run_section(sec: Section, dry: bool, work: Path, budget: float, peak_tflops: float | None) -> dict[str, Any]:
    """Run one section and read its results; never raises (a failure is the section's status and error)."""
    expected = sec.dry_expected_s if dry else sec.expected_s
    out: dict[str, Any] = {"status": "failed", "expected_s": expected, "budget_s": budget}
    log = work / f"{sec.name}.log"
    try:
        cmd = section_command(sec.name, dry, work, budget, peak_tflops)
        out["command"] = [Path(c).name if c == sys.executable else c for c in cmd]
        print(f"== {sec.name}: {' '.join(out['command'][1:])} (expected {expected:.0f} s, budget {budget:.0f} s)")
        rc, out["seconds"] = run_command(cmd, section_env(dry), budget, log)
        try:
            out["results"] = READERS[sec.name](work)
        except (OSError, ValueError, KeyError, ET.ParseError) as e:  # nothing (or half) written: the log says why
            out["results"] = {"problem": f"no readable results: {type(e).__name__}: {e}"}
        problem = out["results"].pop("problem")
        if rc is None:
            out.update(status="timeout", error=f"killed after its budget of {budget:.0f} s")
        elif rc != 0 or problem:
            out["error"] = f"exit code {rc}" + (f"; {problem}" if problem else "")
        else:
            out["status"] = "ok"
    except Exception as e:  # a bug here must not cost the other sections
        out["error"] = f"{type(e).__name__}: {e}"
    if out["status"] != "ok" and log.exists():
        out["log_tail"] = log.read_text(errors="replace")[-3000:]
    return out


# ---------------------------------------------------------------- hardware and report
def hardware(dry: bool) -> dict[str, Any]:
    """Where the check ran: GPU name and memory, CUDA, torch and transformers versions, CPU."""
    import torch

    cpu = re.findall(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()) if sys.platform == "linux" else []
    hw: dict[str, Any] = {"cpu": cpu[0] if cpu else platform.processor(), "cpu_cores": os.cpu_count(),
                          "python": platform.python_version(), "torch": torch.__version__,
                          "cuda": torch.version.cuda, "gpu": None}  # fmt: skip
    for pkg in ("transformers", "accelerate", "peft", "bitsandbytes", "flash-attn"):
        try:
            hw[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            hw[pkg] = None
    if not dry and torch.cuda.is_available():  # after the sections: this process's CUDA context took nothing from them
        props = torch.cuda.get_device_properties(0)
        hw.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 2))
        hw.update(gpu_count=torch.cuda.device_count(), cudnn=torch.backends.cudnn.version())
    return hw


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def summary_line(name: str, sec: dict[str, Any]) -> str:
    """One line of what a section found."""
    res = sec.get("results") or {}
    if name == "tests" and "counts" in res:
        c = res["counts"]
        return f"{c['passed']} passed, {c['skipped']} skipped, {c['failed']} failed, {c['error']} errors"
    if name == "throughput" and res.get("rows"):
        parts = []
        for r in res["rows"]:
            mfu = f", MFU {r['mfu']:.3f}" if r.get("mfu") is not None else ""
            parts.append(f"{r['stage']} {r['system']} {r['samples_per_s']} samples/s{mfu}")
        return "; ".join(parts)
    if name == "max_model" and "largest" in res:
        return "; ".join(f"{mode}: {shape or 'none'}" for mode, shape in res["largest"].items())
    return sec.get("error", "")


def print_summary(report: dict[str, Any]) -> None:
    print("\n| section | status | seconds | expected s | budget s | result |\n|---|---|---|---|---|---|")
    for name, sec in report["sections"].items():
        print(f"| {name} | {sec['status']} | {sec.get('seconds', '-')} | {sec['expected_s']:.0f} | "
              f"{sec['budget_s']:.0f} | {summary_line(name, sec)} |")  # fmt: skip
    thr = report["sections"].get("throughput", {}).get("results", {})
    if thr.get("rows"):
        print("\n| stage | system | samples/s | tokens/s | speed-up | MFU | peak MB | loss step 1 |")
        print("|---|---|---|---|---|---|---|---|")
        for r in thr["rows"]:
            cells = [r[k] for k in ("stage", "system", "samples_per_s", "tokens_per_s", "speedup")]
            cells += [r.get("mfu", "-"), r["peak_memory_mb"], r["loss_step1"]]
            print("| " + " | ".join(str(c) for c in cells) + " |")
    print(f"\n{report['status']} in {report['wall_s']} s{' (dry run: CPU, tiny shapes)' if report['dry_run'] else ''}")


def parse_budgets(text: str, names: list[str], dry: bool, error) -> dict[str, float]:
    """Per-section budgets: the defaults, with ``NAME=SECONDS,...`` overrides."""
    budgets = {n: SECTIONS[n].dry_budget_s if dry else SECTIONS[n].budget_s for n in names}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, secs = part.partition("=")
        if name not in SECTIONS or not re.fullmatch(r"\d+(\.\d+)?", secs):
            error(f"--budget-s: {part!r} is not SECTION=SECONDS with SECTION one of {list(SECTIONS)}")
        budgets[name] = float(secs)
    return budgets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="CPU and tiny shapes, the same code paths (CI)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--budget-s", default="", help="override budgets: SECTION=SECONDS,... (defaults: see above)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak for MFU if the GPU is not known")
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/gpu_check[_dry_run].json)")
    ap.add_argument("--work", default=None, help="scratch folder, kept (default: a temporary one, removed)")
    a = ap.parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)
    names = [n.strip() for n in a.sections.split(",") if n.strip()]
    if not names or set(names) - set(SECTIONS):
        ap.error(f"--sections: {a.sections!r} is not a subset of {','.join(SECTIONS)}")
    budgets = parse_budgets(a.budget_s, names, a.dry_run, ap.error)
    if not a.dry_run:
        import torch

        if not torch.cuda.is_available():
            ap.error("no CUDA device here: run on a GPU machine, or use --dry-run for the CPU rehearsal")
    out = Path(a.out or HERE / "results" / ("gpu_check_dry_run.json" if a.dry_run else "gpu_check.json"))
    with tempfile.TemporaryDirectory(prefix="scitune-gpu-check-") as tmp:
        work = Path(a.work or tmp).resolve()
        work.mkdir(parents=True, exist_ok=True)
        report = run_check(names, budgets, a, work)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_summary(report)
    print(f"wrote {out}")
    return 0 if report["status"] == "ok" else 1


def run_check(names: list[str], budgets: dict[str, float], a: argparse.Namespace, work: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    sections = {n: run_section(SECTIONS[n], a.dry_run, work, budgets[n], a.peak_tflops) for n in names}
    return {
        "check": "gpu_check",
        "dry_run": a.dry_run,
        "started": started,
        "command": ["gpu_check.py", *a.argv],
        "status": "ok" if all(s["status"] == "ok" for s in sections.values()) else "failed",
        "wall_s": round(time.perf_counter() - t0, 1),
        "expected_s": {n: SECTIONS[n].dry_expected_s if a.dry_run else SECTIONS[n].expected_s for n in names},
        "expected_note": EXPECTED_NOTE["dry" if a.dry_run else "gpu"],
        "budget_s": budgets,
        "hardware": hardware(a.dry_run),
        "git": git_state(),
        "sections": sections,
    }


if __name__ == "__main__":
    raise SystemExit(main())
