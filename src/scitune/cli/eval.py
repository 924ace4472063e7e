"""`scitune eval BENCHMARK` (one subcommand per registered benchmark), `scitune eval report RUN...` and
`scitune eval ensemble` (two ScienceQA prediction files combined)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from scitune.cli.common import parser

DESCRIPTION = """Evaluate a checkpoint on a benchmark, or score predictions made elsewhere.

  scitune eval scienceqa --checkpoint runs/ft/final --data ScienceQA/data/scienceqa --split test
  scitune eval scienceqa --predictions answers.jsonl --data problems.json --split val --out eval/sqa
  scitune eval truthfulqa-mc --checkpoint runs/ft/final --data mc_task.json --compare-base
  scitune eval truthfulqa-gen --llm meta-llama/Llama-2-7b-hf --data TruthfulQA.csv --out eval/tqa-gen
  scitune eval scienceqa --checkpoint runs/ft/final --data ScienceQA/data/scienceqa --blind   # + blank-image run
  scitune eval mscoco-c --base captioning --data dataset_coco.json --checkpoint runs/ft/final --out eval/coco-c
  scitune eval report eval/sqa-a eval/sqa-b --out eval/compare
  scitune eval ensemble --a llava.jsonl --b gpt4.jsonl --mode complement --data problems.json --split test \\
      --out eval/sqa-ensemble [--judge-url http://host/v1 --judge-model gpt-4]

Outputs in --out: predictions.jsonl (appended as answers come; a rerun resumes), results.json, report.md, *.png."""


def _build(benchmarks) -> Any:
    from scitune.eval.ensemble import EnsembleOptions

    p = parser("eval", DESCRIPTION)
    sub = p.add_subcommands(dest="benchmark")
    for name in benchmarks.names():
        cls = benchmarks.get(name)
        doc = (cls.Options.__doc__ or "").strip()
        sp = parser(f"eval {name}", f"{(cls.__doc__ or '').strip()}\n\n{doc}")
        sp.add_class_arguments(cls.Options, None)
        sub.add_subcommand(name, sp, help=(cls.__doc__ or name).strip().split("\n")[0])
    rp = parser("eval report", "Put eval runs side by side: one Markdown table and one bar plot.")
    rp.add_argument("runs", nargs="+", help="eval output folders (or their results.json)")
    rp.add_argument("--out", default=None, help="folder for comparison.md and comparison.png (default: print only)")
    rp.add_argument("--overwrite", type=bool, default=False, help="write into an --out that holds other files (kept)")
    sub.add_subcommand("report", rp, help="compare eval runs side by side (table + bar plot)")
    ep = parser("eval ensemble", (EnsembleOptions.__doc__ or "").strip())
    ep.add_class_arguments(EnsembleOptions, None)
    sub.add_subcommand("ensemble", ep, help="combine two ScienceQA prediction files (LLaVA's ensembles), then score")
    return p


def _ensemble(ns: Any) -> int:
    from scitune.eval.ensemble import EnsembleOptions, run_ensemble

    opts = EnsembleOptions(**{f.name: ns[f.name] for f in dataclasses.fields(EnsembleOptions)})
    results = run_ensemble(opts)
    ens = {k: v for k, v in results["ensemble"].items() if k != "failures"}
    print(json.dumps({"out": results["out"], "summary": results["summary"], "ensemble": ens}, indent=2))
    return 0


def main(argv: list[str]) -> int:
    from scitune.eval import BENCHMARKS
    from scitune.eval.report import compare_runs
    from scitune.eval.runner import run_benchmark

    args = _build(BENCHMARKS).parse_args(argv)
    name = args.benchmark
    if name == "report":
        print(compare_runs(args.report.runs, args.report.out, args.report.overwrite))
        return 0
    if name == "ensemble":  # not a benchmark: combines two prediction files, then scores with scienceqa
        return _ensemble(args.ensemble)
    cls = BENCHMARKS.get(name)
    opts = cls.Options(**{f.name: args[name][f.name] for f in dataclasses.fields(cls.Options)})
    results = run_benchmark(cls(opts))
    inputs = results.get("input", results.get("checkpoint", {}).get("input", {}))
    summary = {"benchmark": name, "out": results["out"], "summary": results["summary"]}
    print(json.dumps({**summary, "input": {k: v for k, v in inputs.items() if k != "first"}}, indent=2))
    return 0
