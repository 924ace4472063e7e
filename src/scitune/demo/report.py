"""The demo's ``report.md``: tables of every step and result, loss curves, per-type and per-kind plots, examples."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scitune.demo.evaluate import eval_plan, headline, predictions, read_results, suffix, zero_shot
from scitune.eval.figure_type import FIGURE_TYPES, plot_confusion
from scitune.eval.scifig_mcq import PROTOCOLS
from scitune.io import atomic_path, read_json, write_text

if TYPE_CHECKING:
    from scitune.demo.runner import Demo

GROUP_COLUMNS = ("Avg", "NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12")


def _figure(w: float, h: float) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.subplots


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _smooth(xs: list[float], k: int = 5) -> list[float]:
    return [sum(xs[max(0, i - k + 1) : i + 1]) / len(xs[max(0, i - k + 1) : i + 1]) for i in range(len(xs))]


def plot_losses(records: dict[str, Any], path: Path) -> None:
    """One panel per trained model: the loss per step (light) and its 5-step running mean."""
    runs = [(name, r["summary"]["losses"]) for name, r in records.items() if r["summary"].get("losses")]
    if not runs:
        return
    fig, sub = _figure(3.0 * len(runs), 2.6)
    axes = sub(1, len(runs), squeeze=False)[0]
    for ax, (name, losses) in zip(axes, runs):
        ax.plot(range(1, len(losses) + 1), losses, color="#9ecae1", lw=0.8)
        ax.plot(range(1, len(losses) + 1), _smooth(losses), color="#08519c", lw=1.5)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("loss", fontsize=8)
    _save(fig, path)


def plot_types(results: dict[str, Any], variants: tuple[str, ...], path: Path) -> None:
    """Per-type figure-type accuracy: the stage-1 model(s) beside the CLIP zero-shot baseline (best prompt)."""
    import numpy as np

    bars = [(f"scitune stage 1 ({v})", results[f"figure-type{suffix(v)}"]["model"]) for v in variants]
    zs = zero_shot(results)
    if zs:
        prompt = max(zs, key=lambda p: zs[p]["acc"] or 0.0)
        bars.append((f"CLIP zero-shot '{prompt}'", zs[prompt]))
    fig, sub = _figure(7.0, 3.0)
    ax = sub()
    x, w = np.arange(len(FIGURE_TYPES)), 0.8 / len(bars)
    for k, (label, sc) in enumerate(bars):
        ax.bar(x + k * w, [sc["per_type"][t]["acc"] or 0 for t in FIGURE_TYPES], w, label=f"{label}: {sc['acc']:.1f}%")
    ax.set_xticks(x + w * (len(bars) - 1) / 2, FIGURE_TYPES, fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)


def plot_kinds(image: dict[str, Any], blind: dict[str, Any], path: Path) -> None:
    """Accuracy per question kind with the figure and with a blank image (blind), read by the official letter rule
    and as the option the explanation names, beside chance; ``image`` and ``blind`` are the ``figure_reading``
    parts of the two scifig-mcq results."""
    import numpy as np

    kinds = [k for k, v in image["kinds"].items() if v["needs_image"]]
    if not kinds:
        return
    fig, sub = _figure(7.0, 0.55 * len(kinds) + 1.2)
    ax = sub()
    y, h = np.arange(len(kinds)), 0.2
    bars = ((image, "letter", "official letter, figure", "#08519c"), (blind, "letter", "official letter, blind",
            "#9ecae1"), (image, "choice", "named option, figure", "#a63603"),
            (blind, "choice", "named option, blind", "#fdae6b"))  # fmt: skip
    for k, (run, protocol, label, color) in enumerate(bars):
        ax.barh(y + h * k, [run[protocol]["per_kind"][q] or 0 for q in kinds], h, color=color, label=label)
    ax.scatter([image["kinds"][q]["chance"] for q in kinds], y + 1.5 * h, marker="|", color="red", s=200,
               label="chance")  # fmt: skip
    ax.set_yticks(y + 1.5 * h, [f"{q} (n={image['kinds'][q]['count']})" for q in kinds], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("accuracy (%)")
    ax.set_xlim(0, 100)
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)


def plot_examples(root: Path, examples: list[dict[str, Any]], path: Path) -> None:
    """The example figures, each with its generated description and one answered question."""
    import textwrap

    from scitune.images import open_image

    if not examples:
        return
    fig, sub = _figure(3.2 * len(examples), 4.4)
    axes = sub(1, len(examples), squeeze=False)[0]
    for ax, ex in zip(axes, examples):
        ax.imshow(open_image(root / ex["image"]), interpolation="nearest")
        ax.set_axis_off()
        text = (f"true: {ex['type']}\nmodel: {ex['generated'][:110]}\n\nQ: {ex['question']}\n{ex['choices']}\n"
                f"answer {ex['gold']} | with image {ex['pred']} | blind {ex['blind']}")  # fmt: skip
        wrapped = "\n".join(textwrap.fill(line, 44) for line in text.split("\n"))
        ax.set_title(wrapped, fontsize=6, loc="left", y=-0.02, va="top", pad=0)
    fig.subplots_adjust(bottom=0.5)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def pick_examples(demo: Demo, results: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """``n`` test figures of distinct types, each with one of its image questions and both answers (the option the
    explanation names), read from the figure-type and scifig-mcq runs."""
    import json

    root = demo.path("scifig")
    figs = [json.loads(x) for x in (root / "scicap" / "test.jsonl").read_text().splitlines() if x.strip()]
    problems = read_json(root / "scienceqa" / "problems.json")
    pids = read_json(root / "scienceqa" / "pid_splits.json")["test"]
    described = predictions(demo.path("eval", "figure-type"))
    picked = {m: results[f"scifig-mcq{'-blind' if m == 'blind' else ''}"]["accuracy"]["results"]  # official parse
              for m in ("image", "blind")}  # fmt: skip
    out, seen, letters = [], set(), "ABCDE"
    for f in figs:
        qs = [p for p in pids if p.startswith(f["id"] + "-q")]
        if f["figure_type"] in seen or not qs:
            continue
        seen.add(f["figure_type"])
        p, idx = problems[qs[0]], {m: picked[m].get(qs[0], -1) for m in picked}
        out.append({"image": f["image"], "type": f["figure_type"],
                    "generated": described.get(f["id"], {}).get("text", ""), "question": p["question"],
                    "gold": letters[p["answer"]],
                    "choices": " ".join(f"({letters[i]}) {c}" for i, c in enumerate(p["choices"])),
                    "pred": letters[idx["image"]] if idx["image"] >= 0 else "?",
                    "blind": letters[idx["blind"]] if idx["blind"] >= 0 else "?"})  # fmt: skip
        if len(out) == n:
            break
    return out


def _fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]


def results_tables(results: dict[str, Any], variants: tuple[str, ...]) -> list[str]:
    """The Markdown tables of the evaluation, from the benchmarks' results: figure type, captions, MCQs."""
    zs = zero_shot(results)
    lines = ["## Figure type (SciFig test; `figure-type` benchmark)", ""]
    cols = [f"stage 1 ({v})" for v in variants] + [f"CLIP zero-shot '{p}'" for p in zs]
    scores = [results[f"figure-type{suffix(v)}"]["model"] for v in variants] + list(zs.values())
    rows = [[t] + [s["per_type"][t]["acc"] for s in scores] for t in FIGURE_TYPES]
    lines += _table(["type", *cols], [*rows, ["**all**", *[s["acc"] for s in scores]]])
    lines += ["", "## Captions (`caption` benchmark: first sentence after the type; SciTune Table 2 metrics)", ""]
    caps = [(v, results[f"caption{suffix(v)}"]["summary"]) for v in variants]
    cap = [[v, c["bleu"], c["rouge_l"], c["sacrebleu"], c["cider_d"], c.get("clipscore")] for v, c in caps]
    lines += _table(["stage 1 variant", "BLEU (google)", "ROUGE-L", "sacreBLEU corpus", "CIDEr-D", "CLIPScore"], cap)
    for v in variants:
        sfx = suffix(v)
        lines += mcq_tables(results[f"scifig-mcq{sfx}"], results[f"scifig-mcq-blind{sfx}"], v)
    return lines


def mcq_tables(image_run: dict[str, Any], blind_run: dict[str, Any], variant: str) -> list[str]:
    """Headline, ScienceQA groups and per-kind accuracy of one stage-2 model with the figure and blind (the
    ``scifig-mcq`` runs without and with ``--blind``), under both answer protocols."""
    m = {"image": image_run["figure_reading"], "blind": blind_run["figure_reading"]}
    fr = m["image"]
    lines = ["", f"## MCQs after stage 2 (stage 1 {variant}; `scifig-mcq` benchmark, with and without `--blind`)", "",
             f"Figure-reading questions: {fr['count']} test image questions of {len(fr['reading_kinds'])} kinds that "
             f"the figure type alone does not answer ({', '.join(fr['reading_kinds'])}). *choice*: the option the "
             "generated explanation names (else its letter); *letter*: LLaVA's official letter parse only.",
             ""]  # fmt: skip
    rows = [[p, m["image"][p]["figure_reading"], m["blind"][p]["figure_reading"], fr["chance"]] for p in PROTOCOLS]
    lines += _table(["answer read as", "with image", "blind (blank image)", "chance"], rows)
    lines += ["", "ScienceQA groups (all test MCQs; the blind run blanks the image of IMG questions):", ""]
    rows = [
        [f"{p}, {r}", *[m[r][p]["groups"][c] for c in GROUP_COLUMNS]] for p in PROTOCOLS for r in ("image", "blind")
    ]
    lines += _table(["run", *GROUP_COLUMNS], rows)
    lines += ["", "Per question kind (accuracy %):", ""]
    rows = [[k, d["count"], "yes" if d["needs_image"] else "no (text)", d["chance"],
             *[m[r][p]["per_kind"][k] for p in PROTOCOLS for r in ("image", "blind")]]
            for k, d in fr["kinds"].items()]  # fmt: skip
    head = ["kind", "n", "image", "chance", "choice: image", "choice: blind", "letter: image", "letter: blind"]
    return lines + _table(head, rows)


def ablation_table(results: dict[str, Any], variants: tuple[str, ...]) -> list[str]:
    """SciTune Table 3 at micro scale: stage-1 variant vs the official ScienceQA score, captions and figure type,
    and a sentence saying whether CTOM beats C, as in the paper, on this run's numbers."""
    head_line = headline(results, variants)
    order = [v for v in ("C", "CT", "CTO", "CTOM") if v in variants] + [
        v for v in variants if v not in ("C", "CT", "CTO", "CTOM")
    ]
    rows = []
    for v in order:
        h, cap = head_line[v], results[f"caption{suffix(v)}"]["summary"]
        rows.append([v, h["scienceqa"]["image"], h["scienceqa"]["blind"], h["figure_type_acc"], cap["bleu"],
                     cap["rouge_l"], cap["cider_d"], h["figure_reading"]["image"]])  # fmt: skip
    head = ["stage 1 variant", "ScienceQA % (official)", "blind %", "figure type %", "BLEU-4", "ROUGE-L", "CIDEr-D",
            "figure reading %"]  # fmt: skip
    lines = ["## Ablation: stage-1 variant (SciTune Table 3)", "", *_table(head, rows), "", ablation_verdict(head_line),
             ""]  # fmt: skip
    vqa = {v: head_line[v]["vqa"] for v in variants if "vqa" in head_line[v]}
    if vqa:
        names = list(next(iter(vqa.values())))
        lines += ["### Few-shot VQA on SciFig test questions (`vqa` benchmark; VQA accuracy %)", "",
                  *_table(["stage 1 variant", *names], [[v, *[r[n] for n in names]] for v, r in vqa.items()]),
                  "", "Open-ended answers (`[image] Q: q A:`), n shots from train; blind rows drop every image. "
                  "The stage-2 model was trained to answer multiple-choice prompts, so low numbers here are expected.",
                  ""]  # fmt: skip
    return lines


def ablation_verdict(head_line: dict[str, Any]) -> str:
    """What the ablation shows on this run, stated from its numbers (CTOM vs C on ScienceQA and captioning)."""
    if "C" not in head_line or "CTOM" not in head_line:
        return ""
    ctom, c = head_line["CTOM"], head_line["C"]
    sqa = ctom["scienceqa"]["image"] - c["scienceqa"]["image"]
    bleu = ctom["caption_bleu"] - c["caption_bleu"]
    said = [
        f"ScienceQA {'+' if sqa >= 0 else ''}{sqa:.2f} points",
        f"caption BLEU-4 {'+' if bleu >= 0 else ''}{bleu:.4f}",
    ]
    both = sqa > 0 and bleu > 0
    verdict = ("CTOM beats C on both, as in the paper" if both else
               "at this scale CTOM does not beat C on both, unlike the paper (one seed, micro models: read the "
               "difference with care)")  # fmt: skip
    return f"CTOM vs C: {', '.join(said)}: {verdict}."


def runs_section(demo: Demo, results: dict[str, Any]) -> list[str]:
    """Each benchmark run: its folder (predictions.jsonl, results.json, report.md, plots) and its command."""
    lines = ["## Benchmark runs", "",
             "Each ran through `scitune.eval.runner.run_benchmark`, as the command beside it does; a rerun of the "
             "command (with another `--out`) gives the same numbers.", ""]  # fmt: skip
    for run in eval_plan(demo):
        if run.folder in results:
            lines += [f"- [`eval/{run.folder}`](eval/{run.folder}/report.md): `{run.command()}`"]
    return [*lines, ""]


def write_report(demo: Demo, records: dict[str, Any]) -> Path:
    """Write ``report.md`` and its plots under ``demo.out/report``, and ``report.html`` (the same, opening offline);
    return the report path."""
    from scitune.demo.html import write_html
    from scitune.demo.paper import paper_section

    out, img = demo.out, demo.path("report")
    total = sum(r["seconds"] for r in records.values())
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0, 0, 0)
    lines = [f"# scitune demo ({demo.cfg.size})", "",
             f"`scitune demo --out {out} --size {demo.cfg.size}{' --ablation' if demo.cfg.ablation else ''}` "
             f"· seed {demo.cfg.seed} · torch threads {getattr(demo, 'threads', demo.cfg.threads)} · "
             f"{versions()} · {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
             f"load average now {load[0]:.1f}", "",
             "The same seed and thread count give the same numbers on a quiet or a busy machine (only the times "
             "differ).", ""]  # fmt: skip
    results = read_results(demo)
    variants = tuple(v for v in demo.variants if _complete(results, v))
    root = demo.path("scifig", "scienceqa")
    if "CTOM" in variants:
        problems = read_json(root / "problems.json")
        pids = read_json(root / "pid_splits.json")["test"]
        lines += paper_section(results, variants, problems, pids, _table)
    lines += [f"Total step time {total:.0f} s (steps done earlier keep their first time).", "", "## Steps", ""]
    lines += _table(["step", "seconds", "summary"], [[k, r["seconds"], r["line"]] for k, r in records.items()])
    plot_losses(records, img / "losses.png")
    lines += ["", "Training curves:", "", "![loss curves](report/losses.png)", ""]
    if "CTOM" in variants:
        plot_types(results, variants, img / "figure_type.png")
        plot_confusion(results["figure-type"]["model"]["confusion"], img / "confusion.png",
                       "stage 1 (CTOM): gold vs generated type")  # fmt: skip
        plot_kinds(results["scifig-mcq"]["figure_reading"], results["scifig-mcq-blind"]["figure_reading"],
                   img / "mcq_kinds.png")  # fmt: skip
        plot_examples(demo.path("scifig"), pick_examples(demo, results, demo.size.examples), img / "examples.png")
        if len(variants) > 1:
            lines += ablation_table(results, variants)
        lines += results_tables(results, variants)
        lines += ["", "![per-type accuracy](report/figure_type.png) ![confusion](report/confusion.png)", "",
                  "Accuracy by question kind with the figure and blind (the official letter rule and the option the "
                  "explanation names):", "", "![per-kind MCQ accuracy](report/mcq_kinds.png)", ""]  # fmt: skip
        lines += ["## Examples (test figures)", "", "Each figure with the stage-1 model's description and one "
                  "question answered with the figure and blind (the official letter parse):", "",
                  "![examples](report/examples.png)", ""]  # fmt: skip
        lines += runs_section(demo, results)
    lines += ["## Notes", "", *NOTES, f"- OCR: {records.get('1-data', {}).get('summary', {}).get('why', '-')}."]
    path = demo.path("report.md")
    write_text(path, "\n".join(lines) + "\n")
    write_html(path, demo.path("report.html"))
    return path


def versions() -> str:
    """scitune, torch, transformers and Python versions (the report says what produced its numbers)."""
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for name in ("scitune", "torch", "transformers"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:  # pragma: no cover
            parts.append(f"{name} ?")
    return ", ".join([*parts, f"Python {platform.python_version()}"])


def _complete(results: dict[str, Any], variant: str) -> bool:
    """Whether the four runs of ``variant`` (figure type, captions, MCQs with the figure and blind) have results."""
    sfx = suffix(variant)
    return all(f"{name}{sfx}" in results for name in ("figure-type", "caption", "scifig-mcq", "scifig-mcq-blind"))


NOTES = [
    "- Models: the micro CLIP and the micro LM are pretrained here from random weights (steps 3-4), saved as "
    "Hugging Face folders and loaded by `--model.vision.path` / `--model.llm.path` like downloaded weights.",
    "- Stage 1 (align) trains the connector only; stage 2 (finetune) trains the connector and the LM, and here the "
    "micro vision encoder too (`--model.vision.trainable`; it was pretrained on captions only). Both run scitune's "
    "training loop (`scitune.train.loop.train`).",
    "- MCQs: SciFig asks only kinds a 64-pixel figure answers without reading its text (counts, colours, trends, "
    "correlation); the explanation-first format (QCM-EA) lets the model name its answer before the letter.",
    "- Choices: SciFig lists each question's choices in a fixed order, as printed exams do (counts ascending over "
    "the kind's whole range, names in the vocabulary's order; `DemoSize.fixed_choices`), so an answer's letter "
    "follows from the answer. With shuffled choices the micro LM named the right option but gave its letter at "
    "chance: a 2-layer LM of a few hundred steps does not learn to look the option up in the list (issue 19: 52 % "
    "of answers named the right option, 24 % gave its letter, chance 26 %).",
    "- Figure type: the type named first in the stage-1 model's description (prompt: the first of the 16 SciTune "
    "questions). Zero-shot: the micro CLIP's image-text similarity to each prompt with the type name.",
    "- Blind: the same stage-2 model with every figure replaced by a blank white image of the same size.",
]
