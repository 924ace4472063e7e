"""Evaluation: benchmarks (registered in `BENCHMARKS`), their official scoring, the runner and reports."""

from scitune.eval import (
    captioning,
    ethics,
    figure_type,
    llava_bench,
    mme,
    pope,
    scienceqa_benchmark,
    scifig_mcq,
    truthfulqa,
    vqa,
)
from scitune.eval.benchmark import BENCHMARKS, Benchmark, EvalOptions, Example

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "EvalOptions",
    "Example",
    "captioning",
    "ethics",
    "figure_type",
    "llava_bench",
    "mme",
    "pope",
    "scienceqa_benchmark",
    "scifig_mcq",
    "truthfulqa",
    "vqa",
]
