"""`scitune eval BENCHMARK` (one subcommand per registered benchmark), `scitune eval report RUN...` and
`scitune eval ensemble` (two ScienceQA prediction files combined)."""

from __future__ import annotations

import dataclasses
import json

from jsonargparse import ArgumentParser

from scitune.cli.common import parser

DESCRIPTION = """Evaluate a checkpoint on a benchmark, or score predictions made elsewhere.

  scitune eval scienceqa --checkpoint runs/ft/final --data ScienceQA/data/scienceqa --split test
  scitune eval scienceqa --predictions answers.jsonl --data problems.json --split val --out eval/sqa
  scitune eval truthfulqa-mc --checkpoint runs/ft/final --data mc_task.json --compare-base
  scitune eval report eval/sqa-a eval/sqa-b --out eval/compare
  scitune eval ensemble --a llava.jsonl --b gpt4.jsonl --mode complement|judge --data problems.json --split test \
      --out eval/sqa-ensemble [--judge-url http://host/v1 --judge-model gpt-4]

Outputs in --out: predictions.jsonl (appended as answers come; a rerun resumes), results.json, report.md, *.png.
Options may be written with dashes or underscores (--compare-base = --compare_base)."""


def _normalize(argv: list[str], bool_flags: set[str]) -> list[str]:
    """Accept ``--a-b`` for ``--a_b``, and a bare boolean flag (``--compare-base``) for ``--compare_base=true``."""
    out = []
    for i, arg in enumerate(argv):
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            name = name.replace("-", "_")
            arg = f"--{name}{eq}{value}"
            nxt = argv[i + 1] if i + 1 < len(argv) else "--"
            if not eq and name in bool_flags and nxt.lower() not in ("true", "false"):
                arg += "=true"
        out.append(arg)
    return out


def _build(benchmarks) -> tuple[ArgumentParser, set[str]]:
    p = parser("eval", DESCRIPTION)
    sub = p.add_subcommands(dest="benchmark")
    bools: set[str] = set()
    for name in benchmarks.names():
        cls = benchmarks.get(name)
        doc = (cls.Options.__doc__ or "").strip()
        sp = ArgumentParser(description=f"{(cls.__doc__ or '').strip()}\n\n{doc}", exit_on_error=False)
        sp.add_class_arguments(cls.Options, None)
        sub.add_subcommand(name, sp, help=(cls.__doc__ or name).strip().split("\n")[0])
        bools |= {f.name for f in dataclasses.fields(cls.Options) if f.type in (bool, "bool")}
    rp = ArgumentParser(
        description="Put eval runs side by side: one Markdown table and one bar plot.", exit_on_error=False
    )
    rp.add_argument("runs", nargs="+", help="eval output folders (or their results.json)")
    rp.add_argument("--out", default=None, help="folder for comparison.md and comparison.png (default: print only)")
    rp.add_argument("--overwrite", action="store_true", help="write into an --out that holds other files (kept)")
    sub.add_subcommand("report", rp, help="compare eval runs side by side (table + bar plot)")
    return p, bools


def _ensemble(argv: list[str]) -> int:
    from scitune.eval.ensemble import EnsembleOptions, run_ensemble

    p = parser("eval ensemble", (EnsembleOptions.__doc__ or "") + " Options may be written with dashes.")
    p.add_class_arguments(EnsembleOptions, None)
    args = p.parse_args(_normalize(argv, {"progress"}))
    opts = EnsembleOptions(**{f.name: args[f.name] for f in dataclasses.fields(EnsembleOptions)})
    results = run_ensemble(opts)
    ens = {k: v for k, v in results["ensemble"].items() if k != "failures"}
    print(json.dumps({"out": results["out"], "summary": results["summary"], "ensemble": ens}, indent=2))
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["ensemble"]:  # not a benchmark: combines two prediction files, then scores with scienceqa
        return _ensemble(argv[1:])
    from scitune.eval import BENCHMARKS
    from scitune.eval.report import compare_runs
    from scitune.eval.runner import run_benchmark

    p, bools = _build(BENCHMARKS)
    args = p.parse_args(_normalize(argv, bools))
    name = args.benchmark
    if name == "report":
        print(compare_runs(args.report.runs, args.report.out, args.report.overwrite))
        return 0
    cls = BENCHMARKS.get(name)
    opts = cls.Options(**{f.name: args[name][f.name] for f in dataclasses.fields(cls.Options)})
    results = run_benchmark(cls(opts))
    print(json.dumps({"benchmark": name, "out": results["out"], "summary": results["summary"], "input": {
        k: v for k, v in results.get("input", results.get("checkpoint", {}).get("input", {})).items() if k != "first"
    }}, indent=2))  # fmt: skip
    return 0
