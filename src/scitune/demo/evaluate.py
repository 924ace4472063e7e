"""The demo's evaluation: figure type and captions after stage 1, SciFig MCQs after stage 2 with and without the
image (the blind baseline), and the micro CLIP's zero-shot figure-type baseline.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from PIL import Image

from scitune.eval.figure_type import FIGURE_TYPES, locate_figure_type, score_figure_types
from scitune.eval.metrics import caption_scores, first_sentence
from scitune.io import read_json
from scitune.sources.converters.scicap import QUESTIONS
from scitune.sources.scifig import question_kind as scifig_kind

DESCRIBE = QUESTIONS[0]
"""The stage-1 test question ("Describe the following image in detail."), one of the 16 it was trained with."""

TYPE_ONLY_KINDS = frozenset({"figure-type", "figure-choice"})
"""Kinds answerable from the figure type alone (left out of the headline figure-reading accuracy)."""


def question_kind(problem: dict[str, Any]) -> str:
    """The kind of a SciFig MCQ (``text-<kind>`` when its data is given in the text instead of an image)."""
    kind = scifig_kind(problem["question"])
    if problem.get("image") is None and problem.get("hint") and kind != "figure-choice":
        return "text-" + ("compare" if kind == "other" else kind)
    return kind


def blank_like(image: Image.Image) -> Image.Image:
    """A white image of the same size: the blind baseline's stand-in for the figure."""
    return Image.new("RGB", image.size, "white")


def _batched_generate(loaded: Any, prompts: list[Any], max_new_tokens: int, desc: str, progress: bool) -> list[str]:
    from tqdm.auto import tqdm

    from scitune.config.schema import GenerationConfig
    from scitune.infer.generate import Generator

    gen, cfg, out = Generator(*loaded), GenerationConfig(max_new_tokens=max_new_tokens), []
    bs = 32
    for i in tqdm(range(0, len(prompts), bs), desc=desc, disable=not progress, unit="batch"):
        out += gen.generate(prompts[i : i + bs], cfg)
    return out


def strip_type(text: str) -> str:
    """The generated text without a leading figure-type name (stage 1 answers start ``"<Type> <caption>"``)."""
    for t in FIGURE_TYPES:
        if text.startswith(t):
            return text[len(t) :].lstrip(" :")
    return text


def describe_figures(model: Any, root: Path, records: list[dict[str, Any]], max_new: int, progress: bool) -> dict:
    """Ask the stage-1 model to describe each test figure; score the figure type and the first caption sentence.

    The prompt is the training turn's layout (question, newline, image placeholder). The caption is the first
    sentence of the answer after its leading type name, compared with the true caption (BLEU, ROUGE-L).
    """
    from scitune.infer.generate import Prompt, open_image

    prompts = [Prompt.single(f"{DESCRIBE}\n<image>", [open_image(root / r["image"])]) for r in records]
    outputs = _batched_generate(model, prompts, max_new, "describe figures", progress)
    golds = [r["figure_type"] for r in records]
    scores = score_figure_types(golds, [locate_figure_type(o) for o in outputs])
    captions = [first_sentence(strip_type(o)) for o in outputs]
    try:
        cap = caption_scores(captions, [r["caption"] for r in records])
    except ImportError as e:  # sacrebleu / rouge-score come with the eval extra
        cap = {"missing": f"{e}; pip install 'scitune[eval]' for caption BLEU/ROUGE", "bleu": {"mean": None},
               "rouge_l": {"mean": None}, "sacrebleu_corpus": None}  # fmt: skip
    return {"figure_type": scores, "captions": cap, "outputs": {r["id"]: o for r, o in zip(records, outputs)}}


def _mcq_prompt(problem: dict[str, Any], prompt_format: str) -> str:
    from scitune.sources.converters import build_eval_prompt

    text = build_eval_prompt(problem, prompt_format)
    return f"{text}\n<image>" if problem["image"] else text  # as the converter writes the training turn


def answer_mcqs(
    model: Any, sqa_root: Path, pids: list[str], problems: dict, prompt_format: str, max_new: int, progress: bool
) -> dict[str, dict[str, str]]:
    """Generated answers per pid, with the figure (``image``) and with a blank image in its place (``blind``)."""
    from scitune.infer.generate import Prompt, open_image

    images = {p: open_image(sqa_root / "images" / p / problems[p]["image"]) for p in pids if problems[p]["image"]}
    out: dict[str, dict[str, str]] = {}
    for mode in ("image", "blind"):
        prompts = []
        for p in pids:
            img = images.get(p)
            img = blank_like(img) if (img is not None and mode == "blind") else img
            prompts.append(Prompt.single(_mcq_prompt(problems[p], prompt_format), [img] if img else []))
        texts = _batched_generate(model, prompts, max_new, f"MCQs ({mode})", progress)
        out[mode] = dict(zip(pids, texts))
    return out


def named_choice(text: str, choices: list[str]) -> int:
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


def choice_predictions(problems: dict[str, Any], answers: dict[str, str]) -> dict[str, int]:
    """Option index per pid: the choice the explanation names (`named_choice`), else LLaVA's letter parse."""
    from scitune.eval.scienceqa import parse_answer

    out = {}
    for pid, text in answers.items():
        named = named_choice(text, problems[pid]["choices"])
        out[pid] = named if named >= 0 else parse_answer(text, problems[pid]["choices"])
    return out


PROTOCOLS = ("choice", "letter")
"""choice: the option the explanation names (else the letter); letter: LLaVA's official letter parse only."""


def score_mcqs(problems: dict[str, Any], pids: list[str], answers: dict[str, dict[str, str]]) -> dict[str, Any]:
    """ScienceQA scoring (groups) with the image and blind, per question kind, and the headline, per protocol.

    The headline ("figure reading") is over the image questions whose kind is not answerable from the figure type
    alone; chance is the mean of 1 / number of choices.
    """
    from scitune.eval.scienceqa import score_scienceqa

    runs = {(proto, m): score_scienceqa(problems, choice_predictions(problems, answers[m]) if proto == "choice"
                                        else answers[m], pids)
            for proto in PROTOCOLS for m in ("image", "blind")}  # fmt: skip
    kinds = {p: question_kind(problems[p]) for p in pids}
    chance: dict[str, list[float]] = defaultdict(list)
    for p in pids:
        chance[kinds[p]].append(1 / len(problems[p]["choices"]))
    needs_image = {k: any(problems[p]["image"] for p in pids if kinds[p] == k) for k in chance}
    reading = sorted(k for k in chance if needs_image[k] and k not in TYPE_ONLY_KINDS)
    out: dict[str, Any] = {"kinds": {k: {"count": len(v), "chance": _pct(v), "needs_image": needs_image[k]}
                                     for k, v in sorted(chance.items())}}  # fmt: skip
    for proto in PROTOCOLS:
        hits = {m: defaultdict(list) for m in ("image", "blind")}
        for (pr, m), sc in runs.items():
            if pr == proto:
                for p in pids:
                    hits[m][kinds[p]].append(sc["results"][p] == problems[p]["answer"])
        pool = {m: [h for k in reading for h in hits[m][k]] for m in hits}
        out[proto] = {
            "figure_reading": {"kinds": reading, "count": len(pool["image"]), "image": _pct(pool["image"]),
                               "blind": _pct(pool["blind"]), "chance": _pct([c for k in reading for c in chance[k]])},
            "per_kind": {k: {m: _pct(hits[m][k]) for m in hits} for k in sorted(chance)},
            "groups": {m: runs[(proto, m)]["table"] for m in ("image", "blind")},
            "overall": {m: runs[(proto, m)]["acc"] for m in ("image", "blind")},
            "results": {m: runs[(proto, m)]["results"] for m in ("image", "blind")},
        }  # fmt: skip
    return out


def _pct(values: list[Any]) -> float | None:
    return round(100.0 * sum(map(float, values)) / len(values), 2) if values else None


def zero_shot_baseline(clip_dir: Path, root: Path, records: list[dict[str, Any]], prompts: list[str]) -> dict:
    """The micro CLIP's zero-shot figure-type accuracy on the test figures, for each prompt template."""
    from scitune.eval.zeroshot import zero_shot_figure_types

    golds = [r["figure_type"] for r in records]
    images = [root / r["image"] for r in records]
    out = {}
    for prompt in prompts:
        preds = zero_shot_figure_types(str(clip_dir), images, FIGURE_TYPES, prompt)
        out[prompt] = score_figure_types(golds, preds)
    return out


def load_split(root: Path, split: str) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    """SciFig ``split``: its SciCap-style records, all ScienceQA-style problems and the split's pids."""
    import json

    records = [json.loads(x) for x in (root / "scicap" / f"{split}.jsonl").read_text().splitlines() if x.strip()]
    problems = read_json(root / "scienceqa" / "problems.json")
    pids = read_json(root / "scienceqa" / "pid_splits.json")[split]
    return records, problems, pids


def fewshot_rows(model: Any, sqa_root: Path, limit: int, progress: bool) -> dict[str, float]:
    """Few-shot VQA (``[image] Q: q A:``, 0/1/2 shots from train, blind rows without images) on SciFig test."""
    from scitune.eval.vqa import fewshot_vqa_rows, load_vqa

    items = [x for x in load_vqa(sqa_root, split="test") if x.image][:limit]
    support = [x for x in load_vqa(sqa_root, split="train") if x.image]
    return fewshot_vqa_rows(model, items, support, shots=(0, 1, 2), blind=True, progress=progress)
