"""The ``scifig-mcq`` benchmark: ScienceQA's prompts and official scoring on SciFig's multiple-choice questions, plus
the figure-reading measure (the option the generated explanation names, per question kind, against chance) and
``--blind`` (every figure replaced by a blank image of its size: the same questions without the figure)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scitune.eval.benchmark import BENCHMARKS, Example, ScoreContext
from scitune.eval.blind import blank_image, blank_images, output_folder
from scitune.eval.scienceqa import predicted_index, score_scienceqa
from scitune.eval.scienceqa_benchmark import ScienceQABenchmark, ScienceQAOptions

__all__ = [
    "PROTOCOLS",
    "TYPE_ONLY_KINDS",
    "SciFigMcqBenchmark",
    "SciFigMcqOptions",
    "blank_image",
    "named_choice",
    "question_kind",
    "score_kinds",
]

TYPE_ONLY_KINDS = frozenset({"figure-type", "figure-choice"})
"""Kinds answerable from the figure type alone (left out of the figure-reading accuracy)."""

PROTOCOLS = ("choice", "letter")
"""How an answer is read: ``choice`` = the option the explanation names (`named_choice`), else the letter;
``letter`` = LLaVA's official letter parse only (`scitune.eval.scienceqa.parse_answer`)."""


def question_kind(problem: Mapping[str, Any]) -> str:
    """The kind of a SciFig MCQ (`scitune.sources.scifig.question_kind`), ``text-<kind>`` when its data is given in
    the text (a hint) instead of an image; ``other`` for questions SciFig does not generate."""
    from scitune.sources.scifig import question_kind as scifig_kind

    kind = scifig_kind(problem["question"])
    if not problem.get("image") and problem.get("hint") and kind != "figure-choice":
        return "text-" + ("compare" if kind == "other" else kind)
    return kind


def named_choice(text: str, choices: Sequence[str]) -> int:
    """The option a generated explanation names: the choice text mentioned last before "The answer is", or -1.

    Matching is case-sensitive on whole words, after removing SciFig's fixed lectures (they name every figure type).
    """
    from scitune.sources.scifig import LECTURES

    explanation = text.split("The answer is")[0]
    for lecture in LECTURES.values():
        explanation = explanation.replace(lecture, " ")
    best, at = -1, -1
    for i, choice in enumerate(choices):
        for m in re.finditer(r"(?<!\w)" + re.escape(choice) + r"(?!\w)", explanation):
            if m.start() > at:
                best, at = i, m.start()
    return best


def _index(problem: Mapping[str, Any], record: Mapping[str, Any] | None, protocol: str) -> int:
    """The option a prediction record picks under ``protocol`` (-1: none; a given ``index`` is used as it is)."""
    if record is None:
        return -1
    if "index" in record:
        return int(record["index"])
    text = str(record.get("text", ""))
    named = named_choice(text, problem["choices"]) if protocol == "choice" else -1
    return named if named >= 0 else predicted_index(problem, text)


def _pct(values: Sequence[float]) -> float | None:
    return round(100.0 * sum(map(float, values)) / len(values), 2) if values else None


def score_kinds(
    problems: Mapping[str, Mapping[str, Any]], pids: Sequence[str], predictions: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Accuracy per question kind and the figure-reading accuracy under both `PROTOCOLS`.

    The figure-reading questions are the image questions whose kind the figure type alone does not answer
    (`TYPE_ONLY_KINDS`); chance is the mean of 1 / number of choices. A missing prediction counts as wrong.

    Args:
        problems: pid -> ScienceQA-style problem.
        pids: the evaluated pids.
        predictions: pid -> prediction record (``text`` and/or ``index``).

    Returns:
        ``{"kinds": {kind: {"count", "chance", "needs_image"}}, "reading_kinds": [...], "count", "chance",
        "choice" | "letter": {"figure_reading", "overall" (accuracy %), "per_kind": {kind: %}, "groups"
        (ScienceQA table)}}``; ``choice`` also holds ``results`` (pid -> option index).
    """
    kinds = {p: question_kind(problems[p]) for p in pids}
    chance: dict[str, list[float]] = defaultdict(list)
    for p in sorted(pids, key=kinds.__getitem__):  # kinds in name order
        chance[kinds[p]].append(1 / len(problems[p]["choices"]))
    needs_image = {k: any(problems[p]["image"] for p in pids if kinds[p] == k) for k in chance}
    reading = sorted(k for k in chance if needs_image[k] and k not in TYPE_ONLY_KINDS)
    out: dict[str, Any] = {
        "kinds": {k: {"count": len(v), "chance": _pct(v), "needs_image": needs_image[k]} for k, v in chance.items()},
        "reading_kinds": reading,
        "count": sum(len(chance[k]) for k in reading),
        "chance": _pct([c for k in reading for c in chance[k]]),
    }
    for proto in PROTOCOLS:
        picked = {p: _index(problems[p], predictions.get(p), proto) for p in pids}
        acc = score_scienceqa(problems, picked, pids)
        hits: dict[str, list[bool]] = defaultdict(list)
        for p in pids:
            hits[kinds[p]].append(picked[p] == problems[p]["answer"])
        out[proto] = {
            "figure_reading": _pct([h for k in reading for h in hits[k]]),
            "overall": acc["acc"],
            "per_kind": {k: _pct(hits[k]) for k in sorted(chance)},
            "groups": acc["table"],
        }
        if proto == "choice":  # the letter protocol's indices are ScienceQA's own ``accuracy.results``
            out[proto]["results"] = picked
    return out


@dataclass
class SciFigMcqOptions(ScienceQAOptions):
    """SciFig MCQs: --data SciFig's scienceqa/ folder (problems.json, pid_splits.json, images/), or problems.json;
    the ScienceQA options below apply (the demo trains and asks in --prompt_format QCM-EA)."""

    blind: bool = False
    """The blind run alone (unlike scienceqa's --blind, which runs it beside the image run): every figure is
    replaced by a white image of the same size (written into --out as blank-<w>x<h>.png); the prompts are
    unchanged."""


@BENCHMARKS.register("scifig-mcq")
class SciFigMcqBenchmark(ScienceQABenchmark):
    """ScienceQA scoring on SciFig MCQs plus figure reading: the option the explanation names, per question kind,
    against chance; --blind replaces every figure by a blank image."""

    name = "scifig-mcq"
    Options = SciFigMcqOptions
    opts: SciFigMcqOptions
    blind_beside = False  # --blind here replaces the figures (the demo runs image and blind as two evals)

    def examples(self) -> list[Example]:
        examples = super().examples()
        if self.opts.blind and any(e.images for e in examples):
            folder, sizes = output_folder(self), {}
            for e in examples:
                e.images = blank_images(e.images, folder, sizes)
        return examples

    def score(self, examples: list[Example], predictions: dict[str, dict[str, Any]], ctx: ScoreContext) -> dict:
        out = super().score(examples, predictions, ctx)
        kinds = score_kinds(self.problems, [e.id for e in examples], predictions)
        out["figure_reading"] = kinds
        out["blind"] = self.opts.blind
        out["summary"].update(
            figure_reading=kinds["choice"]["figure_reading"],
            figure_reading_letter=kinds["letter"]["figure_reading"],
            figure_reading_chance=kinds["chance"],
            choice_acc=kinds["choice"]["overall"],
            **{f"kind:{k}": v for k, v in kinds["choice"]["per_kind"].items()},
        )
        return out

    def report(self, results: dict[str, Any]) -> str:
        from scitune.eval.report import md_table

        fr = results["figure_reading"]
        run = "blind: every figure replaced by a blank image" if results["blind"] else "with the figures"
        text = (
            f"### Figure reading ({run})\n\n{fr['count']} image questions of {len(fr['reading_kinds'])} kinds that the "
            f"figure type alone does not answer ({', '.join(fr['reading_kinds'])}). *choice*: the option the "
            "generated explanation names (else its letter); *letter*: LLaVA's official letter parse only.\n\n"
        )
        rows = [[p, fr[p]["figure_reading"], fr[p]["overall"], fr["chance"]] for p in PROTOCOLS]
        text += md_table(["answer read as", "figure reading (%)", "all questions (%)", "chance (%)"], rows)
        rows = [[k, d["count"], "yes" if d["needs_image"] else "no (text)", d["chance"],
                 *(fr[p]["per_kind"][k] for p in PROTOCOLS)] for k, d in fr["kinds"].items()]  # fmt: skip
        text += "\n### Accuracy (%) per question kind\n\n"
        text += md_table(["kind", "n", "image", "chance", "choice", "letter"], rows)
        return text + "\n## ScienceQA scoring (letter parse)\n\n" + super().report(results)

    def plots(self, results: dict[str, Any], out_dir: Path) -> list[str]:
        from scitune.eval.plots import bar_chart

        fr = results["figure_reading"]
        kinds = list(fr["kinds"])
        series = {p: [fr[p]["per_kind"][k] for k in kinds] for p in PROTOCOLS}
        series["chance"] = [fr["kinds"][k]["chance"] for k in kinds]
        title = "accuracy per question kind (%)" + (" - blind" if results["blind"] else "")
        bar_chart(out_dir / "kinds.png", [f"{k} (n={fr['kinds'][k]['count']})" for k in kinds], series, title=title,
                  ylabel="accuracy (%)", horizontal=True)  # fmt: skip
        return ["kinds.png", *super().plots(results, out_dir)]
