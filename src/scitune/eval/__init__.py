"""Evaluation: benchmarks (registered in `BENCHMARKS`), their official scoring, the runner and reports."""

from scitune.eval import (
    captioning,
    corruptions,
    ethics,
    figure_type,
    llava_bench,
    mme,
    pope,
    scienceqa_benchmark,
    scifig_mcq,
    truthfulqa,
    truthfulqa_gen,
    unicorn,
    vqa,
)
from scitune.eval.benchmark import BENCHMARKS, Benchmark, EvalOptions, Example

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "EvalOptions",
    "Example",
    "captioning",
    "corruptions",
    "ethics",
    "figure_type",
    "llava_bench",
    "mme",
    "pope",
    "scienceqa_benchmark",
    "scifig_mcq",
    "truthfulqa",
    "truthfulqa_gen",
    "unicorn",
    "vqa",
]
