"""`scitune demo` end to end: time per step, machine load, and the demo's targets checked on its own results.

``python benchmarks/demo.py`` runs ``scitune demo`` (default size micro, one torch thread as the demo's default) in a
fresh folder as a subprocess, samples the load average while it runs, then prints a table and writes
``benchmarks/results/demo-<size>.json`` (``demo-<size>-load<N>.json`` with ``--load N``).

``--load N`` starts N busy processes (each spins one CPU) beside the demo and stops them at the end, so the timing of
a loaded machine is reproducible; the JSON records N, the load average and each step's time.

``--readme`` rewrites the block between ``<!-- demo-table:start -->`` and ``<!-- demo-table:end -->`` in README.md
from the latest result JSONs (quiet and loaded); ``--readme-only`` does that without running the demo.

Targets (issue 19): end to end < 600 s on 2 CPU cores; official ScienceQA accuracy (the letter after "The answer
is") >= 50 % with the figure and >= blind + 15 points; figure type >= 90 % and above the CLIP zero-shot baseline;
figure-reading MCQ accuracy >= blind + 15 points over >= 3 question kinds.
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
README = HERE.parent / "README.md"
START, END = "<!-- demo-table:start -->", "<!-- demo-table:end -->"
BURN = "while True:\n    pass\n"
"""What each --load process runs: one CPU kept busy until it is stopped."""


def sample_load(stop: threading.Event, samples: list[float], every: float = 5.0) -> None:
    """Append the 1-minute load average every ``every`` seconds until ``stop`` is set."""
    while not stop.wait(every):
        samples.append(os.getloadavg()[0])


def start_load(n: int) -> list[subprocess.Popen]:
    """N processes that each keep one CPU busy (`stop_load` ends them)."""
    return [subprocess.Popen([sys.executable, "-c", BURN], stdin=subprocess.DEVNULL) for _ in range(n)]


def stop_load(procs: list[subprocess.Popen]) -> None:
    """End the --load processes (each by its own handle) and reap them."""
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def run(out: Path, size: str, threads: int, ablation: bool, load: int = 0) -> tuple[float, list[float], int]:
    """Run the demo beside ``load`` busy processes; return (wall seconds, load samples, exit code)."""
    cmd = [sys.executable, "-m", "scitune", "demo", "--out", str(out), "--size", size, "--demo.progress", "false"]
    cmd += ["--demo.threads", str(threads)] + (["--ablation"] if ablation else [])
    burners = start_load(load)
    try:
        samples, stop = [os.getloadavg()[0]], threading.Event()
        watcher = threading.Thread(target=sample_load, args=(stop, samples), daemon=True)
        watcher.start()
        t0 = time.perf_counter()
        with open(out.parent / f"{out.name}.log", "w") as log:
            code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - t0
        stop.set()
    finally:
        stop_load(burners)
    return wall, samples, code


def targets(head: dict[str, Any], wall: float) -> dict[str, bool]:
    """The issue's targets, each True/False, from the evaluate step's headline."""
    main = head["CTOM"]
    fr, sqa = main["figure_reading"], main["scienceqa"]
    zs = max(head["zero_shot"].values())
    return {
        "end to end < 600 s": wall < 600,
        "ScienceQA (official) >= 50 % with the figure": sqa["image"] >= 50,
        "ScienceQA (official) >= blind + 15": sqa["image"] >= sqa["blind"] + 15,
        "figure type >= 90 %": main["figure_type_acc"] >= 90,
        "figure type > CLIP zero-shot": main["figure_type_acc"] > zs,
        "figure reading >= blind + 15": fr["image"] >= fr["blind"] + 15,
        ">= 3 question kinds": len(fr["kinds"]) >= 3,
    }


def table(steps: dict[str, Any], head: dict[str, Any], checks: dict[str, bool], info: dict[str, Any]) -> str:
    rows = [f"{'step':<16}{'seconds':>9}  summary"]
    rows += [f"{k:<16}{v['seconds']:>9.1f}  {v['line'][:110]}" for k, v in steps.items()]
    rows.append(f"{'total (wall)':<16}{info['wall_s']:>9.1f}  load average {info['load_mean']:.1f} mean, "
                f"{info['load_max']:.1f} max on {info['cpus']} CPUs ({info['load_procs']} --load processes), "
                f"torch threads {info['threads']}")  # fmt: skip
    for v, h in head.items():
        if v == "zero_shot":
            rows.append(f"CLIP zero-shot figure type: {json.dumps(h)}")
            continue
        fr, sqa = h["figure_reading"], h["scienceqa"]
        rows.append(f"[{v}] ScienceQA (official) {sqa['image']:.2f} % with the figure / {sqa['blind']:.2f} % blind; "
                    f"figure type {h['figure_type_acc']:.1f} %, caption BLEU {h['caption_bleu']:.3f}, figure-reading MCQs "
                    f"{fr['image']} % / {fr['blind']} % blind / {fr['chance']} % chance ({fr['count']} questions)")  # fmt: skip
    rows += [f"{'PASS' if ok else 'FAIL'}  {name}" for name, ok in checks.items()]
    return "\n".join(rows)


def readme_table(results: list[dict[str, Any]]) -> str:
    """The README's demo table (Markdown) from benchmark result JSONs, one column per run (quiet, loaded)."""
    if not results:
        raise ValueError("no demo benchmark results to paste (run python benchmarks/demo.py first)")

    def cond(r: dict[str, Any]) -> str:
        i = r["info"]
        busy = f"+{i.get('load_procs', 0)} busy processes" if i.get("load_procs") else "no added load"
        return f"{busy}, load avg {i['load_mean']:.1f}"

    names = sorted({k for r in results for k in r["steps"]})
    head = ["", *[cond(r) for r in results]]
    rows = [[f"step {k} (s)", *[f"{r['steps'][k]['seconds']:.0f}" if k in r["steps"] else "-" for r in results]]
            for k in names]  # fmt: skip
    rows.append(["**total wall (s)**", *[f"**{r['info']['wall_s']:.0f}**" for r in results]])
    m = [r["headline"]["CTOM"] for r in results]
    rows += [
        ["ScienceQA, official letter rule: with the figure (%)", *[f"**{h['scienceqa']['image']:.2f}**" for h in m]],
        ["ScienceQA, official letter rule: blind (%)", *[f"{h['scienceqa']['blind']:.2f}" for h in m]],
        ["figure type, stage-1 model (%)", *[f"{h['figure_type_acc']:.1f}" for h in m]],
        ["figure type, CLIP zero-shot best prompt (%)",
         *[f"{max(r['headline']['zero_shot'].values()):.1f}" for r in results]],
        ["caption BLEU-4 / ROUGE-L", *[f"{h['caption_bleu']:.3f} / {h['caption_rouge_l']:.3f}" for h in m]],
        ["figure reading: with the figure / blind / chance (%)",
         *[f"{h['figure_reading']['image']} / {h['figure_reading']['blind']} / {h['figure_reading']['chance']}"
           for h in m]],
        ["targets met", *[f"{sum(r['targets'].values())} of {len(r['targets'])}" for r in results]],
    ]  # fmt: skip
    info = results[0]["info"]
    lines = [f"Pasted by `python benchmarks/demo.py --readme` from {', '.join(r['file'] for r in results)} "
             f"(seed {info.get('seed', 0)}, torch threads {info['threads']}, {info.get('versions', '')}; "
             f"{info['cpus']} CPUs; with 2 or more, steps 3 and 4 run side by side, so the total is less than the "
             "sum of the steps):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """``text`` with what lies between the `START` and `END` markers replaced by ``block``."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"README.md must hold one {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block}\n{END}{tail}"


def paste_readme(result_files: list[Path], readme: Path = README) -> None:
    """Rewrite the README's demo block from ``result_files`` (those that exist)."""
    results = []
    for f in result_files:
        if f.is_file():
            r = json.loads(f.read_text())
            r["file"] = f"`{f.relative_to(HERE.parent) if f.is_relative_to(HERE.parent) else f}`"
            results.append(r)
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(replace_block(readme.read_text(), readme_table(results)))
    os.replace(tmp, readme)


def versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{n} {version(n)}" for n in ("scitune", "torch", "transformers"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="micro", choices=["test", "micro", "small"])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the demo's default 1; 0 = choose)")
    ap.add_argument("--load", type=int, default=0, help="busy processes to run beside the demo (each spins a CPU)")
    ap.add_argument("--ablation", action="store_true", help="also stage 1 with variants C, CT and CTO")
    ap.add_argument("--out", default=None, help="folder to run in; the demo writes DIR/demo, which must not exist yet "
                    "(default: a fresh temp folder)")  # fmt: skip
    ap.add_argument("--json", default=None, help="result file (default benchmarks/results/demo-<size>[-load<N>].json)")
    ap.add_argument("--readme", action="store_true", help="then paste the README's demo table from the latest JSONs")
    ap.add_argument("--readme-only", action="store_true", help="only paste the README's demo table")
    args = ap.parse_args()
    default = HERE / "results" / f"demo-{args.size}{f'-load{args.load}' if args.load else ''}.json"
    path = Path(args.json) if args.json else default
    readme_files = [HERE / "results" / f"demo-{args.size}.json", *sorted((HERE / "results").glob(
        f"demo-{args.size}-load*.json"))]  # fmt: skip
    if args.readme_only:
        paste_readme(readme_files)
        print(f"README.md demo table pasted from {[str(f) for f in readme_files if f.is_file()]}")
        return 0
    out = Path(args.out or tempfile.mkdtemp(prefix="scitune-demo-bench-")) / "demo"
    if out.exists():
        sys.exit(f"{out} exists: the benchmark times a fresh run")
    out.parent.mkdir(parents=True, exist_ok=True)
    wall, loads, code = run(out, args.size, args.threads, args.ablation, args.load)
    if code != 0:
        sys.exit(f"scitune demo failed (exit {code}); see {out.parent / (out.name + '.log')}")
    from scitune.demo import step_records

    steps = step_records(out)
    head = steps["8-evaluate"]["summary"]["headline"]
    info = {"size": args.size, "wall_s": round(wall, 1), "cpus": os.cpu_count(), "threads": args.threads,
            "load_procs": args.load, "load_mean": round(sum(loads) / len(loads), 2), "load_max": max(loads),
            "load_samples": loads, "seed": 0, "versions": versions(), "machine": platform.platform(),
            "python": platform.python_version(), "out": str(out)}  # fmt: skip
    checks = targets(head, wall)
    print(table(steps, head, checks, info))
    result = {"info": info, "steps": {k: {"seconds": v["seconds"], "cpu_seconds": v.get("cpu_seconds"),
                                          "line": v["line"]} for k, v in steps.items()},
              "headline": head, "targets": checks}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {path}; report: {out / 'report.md'}")
    if args.readme:
        paste_readme(readme_files if path in readme_files else [path])
        print("README.md demo table pasted")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
