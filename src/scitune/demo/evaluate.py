"""Step 8 of the demo: which registered benchmarks run on which checkpoint (`eval_plan`), each through
`scitune.eval.runner.run_benchmark` into ``eval/<folder>/`` exactly as ``scitune eval`` runs it, and the headline
numbers read back from their results.json files. No scoring lives here."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scitune.io import read_json

if TYPE_CHECKING:
    from scitune.demo.runner import Demo

ZERO_SHOT_PROMPTS = ["a {}", "a {} from a scientific paper"]
"""Prompt templates of the CLIP zero-shot baseline (``figure-type --clip_prompt`` and ``--clip_prompts``); the best
one is the baseline."""
VQA_QUESTIONS = 120
"""Test image questions in the ablation's few-shot VQA rows."""
VQA_SHOTS = [0, 1, 2]
"""Shot counts of the few-shot VQA rows (each also blind)."""
VQA_MAX_NEW_TOKENS = 8
"""Most tokens of a VQA answer (answers are a few words)."""
BATCH_SIZE = 32
"""Prompts per generation batch."""


@dataclass(frozen=True)
class EvalRun:
    """One benchmark run of step 8: ``scitune eval <benchmark>`` with ``options`` into ``eval/<folder>``."""

    folder: str
    benchmark: str
    variant: str
    options: dict[str, Any]

    def command(self) -> str:
        """The ``scitune eval`` command line that makes this run (the demo calls the same function in-process)."""
        parts = ["scitune", "eval", self.benchmark]
        for key, value in self.options.items():
            if key == "progress":
                continue
            text = json.dumps(value) if isinstance(value, list | bool) else str(value)
            parts += [f"--{key}", text]
        return " ".join(shlex.quote(p) for p in parts)


def suffix(variant: str) -> str:
    """Folder / step-name suffix of a stage-1 variant: "" for the main one (CTOM), ``-C`` for the ablation's C."""
    return "" if variant == "CTOM" else f"-{variant}"


def eval_plan(demo: Demo) -> list[EvalRun]:
    """The benchmark runs of step 8, per stage-1 variant (main variant first).

    - ``figure-type``: the stage-1 model describes each SciFig test figure; the type it names first is scored, and
      the micro CLIP's zero-shot baseline is scored beside it (main variant only);
    - ``caption``: the same descriptions (read from figure-type's predictions.jsonl: no second generation), first
      sentence after the type vs the true caption;
    - ``scifig-mcq``: the stage-2 model answers every SciFig test MCQ (ScienceQA scoring plus figure reading per
      question kind); ``scifig-mcq-blind``: the same with every figure replaced by a blank image;
    - ``vqa`` (``--ablation``): few-shot VQA rows (0/1/2 shots from train, each also blind).
    """
    s, cfg = demo.size, demo.cfg
    scicap, sqa = str(demo.path("scifig", "scicap", "test.jsonl")), str(demo.path("scifig", "scienceqa"))
    clip = str(demo.path("models", "clip"))
    common = {"batch_size": BATCH_SIZE, "progress": cfg.progress}
    runs = []

    def add(folder: str, benchmark: str, variant: str, source: dict[str, str], **options: Any) -> str:
        out = str(demo.path("eval", folder))
        runs.append(EvalRun(folder, benchmark, variant, {**source, "out": out, **options, **common}))
        return out

    for v in demo.variants:
        sfx = suffix(v)
        align = {"data": scicap, "checkpoint": str(demo.path("runs", f"align-{v}", "final"))}
        zero_shot = {"clip": clip, "clip_prompt": ZERO_SHOT_PROMPTS[0], "clip_prompts": ZERO_SHOT_PROMPTS[1:]}
        described = add(f"figure-type{sfx}", "figure-type", v, align, max_new_tokens=s.caption_tokens,
                        **(zero_shot if v == "CTOM" else {}))  # fmt: skip
        # the same prompts as figure-type's: score its answers instead of generating them again
        add(f"caption{sfx}", "caption", v, {"data": scicap, "predictions": f"{described}/predictions.jsonl"},
            strip_type=True, clip=clip)  # fmt: skip
        finetune = {"data": sqa, "checkpoint": str(demo.path("runs", f"finetune-{v}", "final"))}
        # the question, then the image on a new line: the layout the scienceqa converter trains on
        mcq = {"split": "test", "prompt_format": s.prompt_format, "image_position": "after",
               "max_new_tokens": s.answer_tokens}  # fmt: skip
        add(f"scifig-mcq{sfx}", "scifig-mcq", v, finetune, **mcq)
        add(f"scifig-mcq-blind{sfx}", "scifig-mcq", v, finetune, **mcq, blind=True)
        if cfg.ablation:
            add(f"vqa{sfx}", "vqa", v, finetune, shots=list(VQA_SHOTS), blind=True, max_new_tokens=VQA_MAX_NEW_TOKENS,
                limit=VQA_QUESTIONS * 2 * len(VQA_SHOTS))  # fmt: skip
    return runs


def run_eval(run: EvalRun) -> dict[str, Any]:
    """Run one benchmark as ``scitune eval`` does (options dataclass -> benchmark -> `run_benchmark`); an
    interrupted run resumes from its predictions.jsonl."""
    from scitune.eval import BENCHMARKS
    from scitune.eval.runner import run_benchmark

    cls = BENCHMARKS.get(run.benchmark)
    return run_benchmark(cls(cls.Options(**run.options)))


def read_results(demo: Demo) -> dict[str, dict[str, Any]]:
    """``{folder: results.json}`` of the step-8 runs that have finished."""
    out = {}
    for run in eval_plan(demo):
        path = demo.path("eval", run.folder, "results.json")
        if path.is_file():
            out[run.folder] = read_json(path)
    return out


def zero_shot(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """CLIP zero-shot scores per prompt (from the main figure-type run), or {} without them."""
    clip = results.get("figure-type", {}).get("clip", {})
    if "per_type" not in clip:
        return {}
    return clip.get("by_prompt") or {clip["prompt"]: clip}


def headline(results: dict[str, dict[str, Any]], variants: tuple[str, ...]) -> dict[str, Any]:
    """The numbers the demo's targets are checked on, per variant (``benchmarks/demo.py`` reads them)."""
    out: dict[str, Any] = {"zero_shot": {p: s["acc"] for p, s in zero_shot(results).items()}}
    for v in variants:
        sfx = suffix(v)
        cap = results[f"caption{sfx}"]["summary"]
        image, blind = (
            results[f"scifig-mcq{sfx}"]["figure_reading"],
            results[f"scifig-mcq-blind{sfx}"]["figure_reading"],
        )
        out[v] = {"figure_type_acc": results[f"figure-type{sfx}"]["model"]["acc"], "caption_bleu": cap["bleu"],
                  "caption_rouge_l": cap["rouge_l"],
                  "mcq_overall": {"image": image["choice"]["overall"], "blind": blind["choice"]["overall"]},
                  **{key: {"kinds": image["reading_kinds"], "count": image["count"],
                           "image": image[p]["figure_reading"], "blind": blind[p]["figure_reading"],
                           "chance": image["chance"]}
                     for key, p in (("figure_reading", "choice"), ("figure_reading_letter", "letter"))}}  # fmt: skip
        # the official ScienceQA accuracy (the letter after "The answer is"), all test MCQs and the image ones
        sqa = {r: results[f"scifig-mcq{b}{sfx}"]["summary"] for r, b in (("image", ""), ("blind", "-blind"))}
        out[v]["scienceqa"] = {"image": sqa["image"]["acc"], "blind": sqa["blind"]["acc"],
                               "image_IMG": sqa["image"]["IMG"], "blind_IMG": sqa["blind"]["IMG"]}  # fmt: skip
        if f"vqa{sfx}" in results:
            out[v]["vqa"] = results[f"vqa{sfx}"]["summary"]
    return out


def evaluate(demo: Demo) -> dict[str, Any]:
    """Step 8: run `eval_plan` (each run resumes what an interrupted step left) and summarise it in one line."""
    plan = eval_plan(demo)
    for run in plan:
        print(f"       eval {run.folder}: {run.command()}", flush=True)
        run_eval(run)
    results = read_results(demo)
    head = headline(results, demo.variants)
    main, zs = head["CTOM"], max(head["zero_shot"].values(), default=None)
    fr = main["figure_reading"]
    sqa = main["scienceqa"]
    line = (f"ScienceQA (official letter rule) {sqa['image']:.2f}% with the figure vs {sqa['blind']:.2f}% blind; "
            f"figure type {main['figure_type_acc']:.1f}% (CLIP zero-shot best {zs or 0:.1f}%), caption BLEU "
            f"{main['caption_bleu']:.3f}; figure-reading MCQs {fr['image']}% with image vs {fr['blind']}% blind "
            f"(chance {fr['chance']}%, n={fr['count']}, {len(fr['kinds'])} kinds); eval/ holds "
            f"{', '.join(r.folder for r in plan)}")  # fmt: skip
    return {"line": line, "headline": head, "runs": {r.folder: {"benchmark": r.benchmark, "variant": r.variant,
                                                                "command": r.command()} for r in plan}}  # fmt: skip


def predictions(folder: Path) -> dict[str, dict[str, Any]]:
    """``{id: record}`` of a benchmark folder's predictions.jsonl ({} when it has none)."""
    path = folder / "predictions.jsonl"
    if not path.is_file():
        return {}
    recs = (json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip())
    return {r["id"]: r for r in recs}
