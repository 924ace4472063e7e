"""`scitune demo` end to end: time per step, machine load, and the demo's targets checked on its own results.

``python benchmarks/demo.py`` runs ``scitune demo`` (default size micro) in a fresh folder as a subprocess, samples
the load average while it runs, then prints a table and writes ``benchmarks/results/demo-<size>.json``.
Targets (issue 6): end to end < 10 min on 2 CPU cores; figure-type accuracy >= 90 % and above the CLIP zero-shot
baseline; figure-reading MCQ accuracy >= blind + 15 points and above chance, over >= 3 question kinds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def sample_load(stop: threading.Event, samples: list[float], every: float = 5.0) -> None:
    """Append the 1-minute load average every ``every`` seconds until ``stop`` is set."""
    while not stop.wait(every):
        samples.append(os.getloadavg()[0])


def run(out: Path, size: str, threads: int, ablation: bool) -> tuple[float, list[float], int]:
    """Run the demo; return (wall seconds, load samples, exit code)."""
    cmd = [sys.executable, "-m", "scitune", "demo", "--out", str(out), "--size", size, "--demo.progress", "false"]
    cmd += ["--demo.threads", str(threads)] + (["--ablation"] if ablation else [])
    samples, stop = [os.getloadavg()[0]], threading.Event()
    watcher = threading.Thread(target=sample_load, args=(stop, samples), daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    with open(out.parent / f"{out.name}.log", "w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    stop.set()
    return wall, samples, code


def targets(head: dict[str, Any], wall: float) -> dict[str, bool]:
    """The issue's targets, each True/False, from the evaluate step's headline."""
    main = head["CTOM"]
    fr = main["figure_reading"]
    zs = max(head["zero_shot"].values())
    return {
        "end to end < 600 s": wall < 600,
        "figure type >= 90 %": main["figure_type_acc"] >= 90,
        "figure type > CLIP zero-shot": main["figure_type_acc"] > zs,
        "figure reading >= blind + 15": fr["image"] >= fr["blind"] + 15,
        "figure reading > chance": fr["image"] > fr["chance"],
        ">= 3 question kinds": len(fr["kinds"]) >= 3,
    }


def table(steps: dict[str, Any], head: dict[str, Any], checks: dict[str, bool], info: dict[str, Any]) -> str:
    rows = [f"{'step':<16}{'seconds':>9}  summary"]
    rows += [f"{k:<16}{v['seconds']:>9.1f}  {v['line'][:110]}" for k, v in steps.items()]
    rows.append(f"{'total (wall)':<16}{info['wall_s']:>9.1f}  load average {info['load_mean']:.1f} mean, "
                f"{info['load_max']:.1f} max on {info['cpus']} CPUs, torch threads {info['threads'] or 'default'}")  # fmt: skip
    for v, h in head.items():
        if v == "zero_shot":
            rows.append(f"CLIP zero-shot figure type: {json.dumps(h)}")
            continue
        fr = h["figure_reading"]
        rows.append(f"[{v}] figure type {h['figure_type_acc']:.1f} %, caption BLEU {h['caption_bleu']}, "
                    f"figure-reading MCQs {fr['image']} % with image / {fr['blind']} % blind / {fr['chance']} % "
                    f"chance over {fr['count']} questions of {len(fr['kinds'])} kinds")  # fmt: skip
    rows += [f"{'PASS' if ok else 'FAIL'}  {name}" for name, ok in checks.items()]
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="micro", choices=["test", "micro", "small"])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--ablation", action="store_true", help="also run stage 1 with variant C")
    ap.add_argument("--out", default=None, help="folder to run in; the demo writes DIR/demo, which must not exist yet "
                    "(default: a fresh temp folder)")  # fmt: skip
    ap.add_argument("--json", default=None, help="result file (default benchmarks/results/demo-<size>.json)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="scitune-demo-bench-")) / "demo"
    if out.exists():
        sys.exit(f"{out} exists: the benchmark times a fresh run")
    out.parent.mkdir(parents=True, exist_ok=True)
    wall, loads, code = run(out, args.size, args.threads, args.ablation)
    if code != 0:
        sys.exit(f"scitune demo failed (exit {code}); see {out.parent / (out.name + '.log')}")
    from scitune.demo import step_records

    steps = step_records(out)
    head = steps["8-evaluate"]["summary"]["headline"]
    info = {"size": args.size, "wall_s": round(wall, 1), "cpus": os.cpu_count(), "threads": args.threads,
            "load_mean": sum(loads) / len(loads), "load_max": max(loads), "machine": platform.platform(),
            "python": platform.python_version(), "out": str(out)}  # fmt: skip
    checks = targets(head, wall)
    print(table(steps, head, checks, info))
    result = {"info": info, "steps": {k: {"seconds": v["seconds"], "line": v["line"]} for k, v in steps.items()},
              "headline": head, "targets": checks}  # fmt: skip
    path = Path(args.json or HERE / "results" / f"demo-{args.size}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {path}; report: {out / 'report.md'}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
