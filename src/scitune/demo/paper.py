"""The first section of the demo's report, in the SciTune paper's shape: ScienceQA accuracy by the official rule
(the letter after "The answer is", the scorer of ``scitune eval scienceqa``) per context and subject group, with the
figure and blind, beside chance and the CLIP zero-shot baseline of figure type; then captioning (BLEU-4, ROUGE-L,
CIDEr) and the demo's figure-reading measure. Every number is read from the benchmarks' results.json files."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scitune.demo.evaluate import suffix, zero_shot
from scitune.eval.scienceqa import score_scienceqa

CONTEXT_GROUPS = ("IMG", "TXT", "NO")
"""ScienceQA's context columns: image, text (a hint), none."""
SUBJECT_GROUPS = ("NAT", "SOC", "LAN", "G1-6", "G7-12")
"""ScienceQA's subject and grade columns (those without test questions are left out)."""


def chance_groups(problems: Mapping[str, Mapping[str, Any]], pids: list[str]) -> dict[str, dict[str, Any]]:
    """Expected accuracy (%) of a random letter per official group (``Avg`` too), with each group's count.

    Computed with `score_scienceqa` itself (every question answered right, per number of choices), so the groups
    are exactly the scorer's.
    """
    by_n: dict[int, list[str]] = {}
    for pid in pids:
        by_n.setdefault(len(problems[pid]["choices"]), []).append(pid)
    hits: dict[str, float] = {}
    counts: dict[str, int] = {}
    for n, some in by_n.items():
        acc = score_scienceqa(problems, {p: problems[p]["answer"] for p in some}, some)
        for g, tally in [("Avg", {"count": acc["count"]}), *acc["groups"].items()]:
            counts[g] = counts.get(g, 0) + tally["count"]
            hits[g] = hits.get(g, 0.0) + tally["count"] / n
    return {g: {"count": counts[g], "acc": round(100 * hits[g] / counts[g], 2) if counts[g] else None} for g in counts}


def paper_table(
    results: dict[str, Any], variants: tuple[str, ...], problems: Mapping[str, Mapping[str, Any]], pids: list[str]
) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) of the first table: per variant, the stage-2 model with the figure and blind; then chance
    and the CLIP zero-shot figure-type baseline."""
    chance = chance_groups(problems, pids)
    groups = [g for g in (*CONTEXT_GROUPS, *SUBJECT_GROUPS) if chance.get(g, {}).get("count")]
    header = ["model", "Avg", *[f"{g} (n={chance[g]['count']})" for g in groups], "figure type"]
    rows: list[list[Any]] = []
    for v in variants:
        sfx = suffix(v)
        ft = results[f"figure-type{sfx}"]["model"]["acc"]
        for run, label, fig in ((f"scifig-mcq{sfx}", "with figure", ft), (f"scifig-mcq-blind{sfx}", "blind", None)):
            s = results[run]["summary"]
            rows.append([f"SciTune micro, stage 1 {v}: {label}", s["acc"], *[s[g] for g in groups], fig])
    zs = zero_shot(results)
    best = max((s["acc"] for s in zs.values() if s.get("acc") is not None), default=None)
    rows.append(["chance (random letter; random type)", chance["Avg"]["acc"], *[chance[g]["acc"] for g in groups],
                 100 / 5])  # fmt: skip
    rows.append(["CLIP zero-shot (micro CLIP, best prompt)", None, *[None] * len(groups), best])
    return header, rows


def paper_section(results: dict[str, Any], variants: tuple[str, ...], problems: Any, pids: list[str],
                  table: Any) -> list[str]:  # fmt: skip
    """Markdown lines of the report's first section (``table(header, rows)`` renders a table)."""
    header, rows = paper_table(results, variants, problems, pids)
    lines = ["## ScienceQA accuracy (official rule), captioning and figure reading", "",
             "ScienceQA accuracy (%) on the demo's test MCQs, scored as ScienceQA and LLaVA score it (the letter after "
             "\"The answer is\"; the scorer of `scitune eval scienceqa`), by context (IMG image, TXT text, NO none), "
             "subject and grade. *blind*: every figure replaced by a blank image. *figure type*: the stage-1 model's "
             "figure-type accuracy (SciTune Table 1) beside the micro CLIP's zero-shot baseline.", "",
             *table(header, rows), ""]  # fmt: skip
    caps = [[v, c["bleu"], c["rouge_l"], c["cider_d"]] for v in variants
            for c in [results[f"caption{suffix(v)}"]["summary"]]]  # fmt: skip
    lines += ["Captioning (first sentence after the type vs the true caption; SciTune Table 2):", "",
              *table(["stage 1 variant", "BLEU-4", "ROUGE-L", "CIDEr-D"], caps), ""]  # fmt: skip
    fr_rows = []
    for v in variants:
        sfx = suffix(v)
        img, blind = (results[f"scifig-mcq{s}{sfx}"]["figure_reading"] for s in ("", "-blind"))
        fr_rows.append([v, img["choice"]["figure_reading"], blind["choice"]["figure_reading"], img["chance"],
                        img["count"]])  # fmt: skip
    lines += ["Figure reading (the demo's own measure: the option the explanation names, on the image questions "
              "the figure type alone does not answer):", "",
              *table(["stage 1 variant", "with figure", "blind", "chance", "n"], fr_rows), ""]  # fmt: skip
    return lines
