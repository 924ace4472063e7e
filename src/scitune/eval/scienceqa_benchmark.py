"""The ``scienceqa`` benchmark (SciTune §3.2, Tables 3-5): LLaVA's evaluation prompts on one split, answers parsed
and scored as the official scorers do (`scitune.eval.scienceqa`), with the lecture-frequency and explanation
quality analyses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from scitune.config.schema import DEFAULT_IMAGE_TOKEN, require
from scitune.data.conversation import Message
from scitune.eval.benchmark import BENCHMARKS, Benchmark, EvalOptions, Example, ScoreContext, resolve_image
from scitune.eval.blind import with_blind
from scitune.eval.report import md_table
from scitune.eval.runner import FollowUp
from scitune.eval.scienceqa import (
    GROUPS,
    correct_by_pid,
    explanation_quality,
    lecture_frequency_table,
    score_scienceqa,
    split_explanation,
)
from scitune.io import DataError, read_json

__all__ = ["ANSWER_CUE", "ScienceQABenchmark", "ScienceQAOptions"]

ANSWER_CUE = " ###\nANSWER:"
"""What the answer prompter appends to the reasoning (the SciTune authors' ``--answer-prompter``)."""
ANSWER_MAX_NEW_TOKENS = 64
"""Most new tokens of the answer prompter's second pass (the authors' value)."""


@dataclass
class ScienceQAOptions(EvalOptions):
    """ScienceQA: --data is problems.json or a folder holding problems.json and pid_splits.json."""

    split: str = "test"
    """Split of pid_splits.json to evaluate (test, val, minitest, ...); its pids absent from the problems are
    skipped and reported."""
    pid_splits: str | None = None
    """pid_splits.json; default: next to the problems file."""
    image_root: str | None = None
    """Folder of <pid>/image.png; default: the first of <data>/images/<split>, <data>/images, <data> holding it."""
    prompt_format: str = "QCM-LEA"
    """LLaVA prompt format the model was trained with (its question half builds the prompt); the answer is then
    parsed from the generated text as LLaVA does."""
    single_pred_prompt: bool = False
    """Append LLaVA-1.5's "Answer with the option's letter from the given choices directly." line."""
    train_problems: str | None = None
    """problems.json holding the training problems: adds SciTune Table 4 (accuracy by lecture frequency)."""
    train_split: str = "train"
    """Split of pid_splits.json whose lectures are counted for Table 4."""
    similarity: str = "bow-cosine"
    """Sentence similarity of Table 5: bow-cosine (model-free) or sentence-transformers[:MODEL]."""
    template: str | None = None
    """Chat template of the prompts instead of the checkpoint's (`scitune ls templates`); llava-v0-simple is the
    SciTune authors' evaluation prompt (LLaVA-v0 ``--conv-mode simple``) for a model trained with llava-v0."""
    image_position: Literal["before", "after"] = "before"
    """Where the image goes in the question: before it (LLaVA-1.5) or after it on a new line (LLaVA-v0 and the
    SciTune authors' evaluation)."""
    answer_prompter: bool = False
    """The SciTune authors' two-pass answer prompter, for models trained on QCM-LEPA (whose replies put a "###"
    line before "ANSWER: X."): the first pass generates the reasoning (cut at "###"); the second continues the
    first prompt with the reasoning + " ###\\nANSWER:" for at most 64 new tokens; the prediction is the reasoning
    + "\\n The answer is " + the second pass's text."""
    temperature: float = 0.0
    """Sampling temperature of both passes; 0 = greedy. The SciTune authors sample at 0.7."""
    seed: int = 0
    """Seed of the sampling (--temperature > 0): each batch draws from (seed, its first question id), so a rerun
    with the same --batch_size gives the same answers."""
    blind: bool = False
    """Also run the blind baseline: the image questions again with every image replaced by a white image of its
    size (written into --out), scored and reported beside the image run (`scitune.eval.blind`)."""

    def __post_init__(self) -> None:
        from scitune.data.templates import CHAT_TEMPLATES

        require(self.temperature >= 0, "--temperature", f"must be >= 0 (0 = greedy), got {self.temperature}")
        names = CHAT_TEMPLATES.names()
        require(self.template in (None, *names), "--template", f"{self.template!r} is not one of {', '.join(names)}")


@BENCHMARKS.register("scienceqa")
@with_blind
class ScienceQABenchmark(Benchmark):
    """ScienceQA accuracy by the official groups (NAT SOC LAN TXT IMG NO G1-6 G7-12), topic and category."""

    name = "scienceqa"
    mode = "generate"
    Options = ScienceQAOptions
    opts: ScienceQAOptions

    def __init__(self, opts: ScienceQAOptions) -> None:
        super().__init__(opts)
        self.problems: dict[str, dict[str, Any]] = {}
        self.skipped: list[str] = []

    def _paths(self) -> tuple[Path, Path]:
        src = Path(self.opts.data)
        problems = src / "problems.json" if src.is_dir() else src
        splits = Path(self.opts.pid_splits) if self.opts.pid_splits else problems.parent / "pid_splits.json"
        return problems, splits

    def examples(self) -> list[Example]:
        from scitune.sources.converters.scienceqa import build_eval_prompt, load_scienceqa, parse_prompt_format

        parse_prompt_format(self.opts.prompt_format)
        problems_path, splits_path = self._paths()
        data = load_scienceqa(problems_path, splits_path, self.opts.split, missing="skip")
        self.problems, self.skipped = data.problems, data.missing
        base = problems_path.parent
        roots = [Path(self.opts.image_root)] if self.opts.image_root else [base / "images" / self.opts.split,
                                                                          base / "images", base]  # fmt: skip
        out = []
        for pid in data.pids:
            prob = data.problems[pid]
            text = build_eval_prompt(prob, self.opts.prompt_format, single_pred_prompt=self.opts.single_pred_prompt)
            images = [resolve_image(f"{pid}/{prob['image']}", roots)] if prob["image"] else []
            out.append(Example(pid, text, images, target=prob["answer"]))
        return out

    def prompt_text(self, example: Example) -> str:
        """The question; with ``--image_position after`` the image placeholder follows it on a new line."""
        if self.opts.image_position == "after" and example.images:
            return "\n".join([example.text, *[DEFAULT_IMAGE_TOKEN] * len(example.images)])
        return example.text

    def follow_up(self, example: Example, messages: list[Message], text: str) -> FollowUp | None:
        """``--answer_prompter``: the second prompt continues the first (``messages``) with the reasoning ``text``
        cut at "###" + `ANSWER_CUE`; the prediction becomes the reasoning + "\\n The answer is " + the answer."""
        if not self.opts.answer_prompter:
            return None
        reasoning = text.split("###", 1)[0].strip()
        cont = Message("assistant", reasoning + ANSWER_CUE)
        return FollowUp([*messages, cont], ANSWER_MAX_NEW_TOKENS, reasoning + "\n The answer is ")

    def _train_problems(self) -> dict[str, dict[str, Any]]:
        path = self.opts.train_problems
        problems = read_json(path)
        if not isinstance(problems, dict):
            raise DataError(f"{path}: expected a JSON object pid -> problem")
        splits = read_json(self._paths()[1])
        pids = [str(p) for p in splits.get(self.opts.train_split, [])] if isinstance(splits, dict) else []
        chosen = {p: problems[p] for p in pids if p in problems}
        return chosen or problems

    def score(self, examples: list[Example], predictions: dict[str, dict[str, Any]], ctx: ScoreContext) -> dict:
        from scitune.eval.metrics import similarity_scorer

        preds = {pid: rec["index"] if "index" in rec else rec["text"] for pid, rec in predictions.items()}
        pids = [e.id for e in examples]
        acc = score_scienceqa(self.problems, preds, pids)
        correct = correct_by_pid(self.problems, acc["results"])
        unparsable = sum(1 for pid, rec in predictions.items() if "index" not in rec and acc["results"][pid] == -1)
        out: dict[str, Any] = {
            "summary": {"acc": acc["acc"], **{g: acc["groups"][g]["acc"] for g in GROUPS}},
            "split": self.opts.split,
            "skipped_split_pids": len(self.skipped),
            "unparsable": unparsable,
            "accuracy": acc,
        }
        texts = {pid: rec["text"] for pid, rec in predictions.items() if _has_explanation(rec.get("text", ""))}
        if texts:
            marked = any(split_explanation(t).marked for t in texts.values())
            sim = similarity_scorer(self.opts.similarity)
            out["explanations"] = explanation_quality(self.problems, texts, correct, sim, marked_format=marked)
        if self.opts.train_problems:
            tests = {pid: self.problems[pid] for pid in pids}
            out["lecture_frequency"] = lecture_frequency_table(self._train_problems(), tests, correct)
        return out

    def report(self, results: dict[str, Any]) -> str:
        acc = results["accuracy"]
        head = ["", "Avg", *GROUPS]
        rows = [
            ["accuracy (%)", acc["acc_str"], *(acc["groups"][g]["acc_str"] for g in GROUPS)],
            ["correct / count", f"{acc['correct']}/{acc['count']}",
             *(f"{acc['groups'][g]['correct']}/{acc['groups'][g]['count']}" for g in GROUPS)],
        ]  # fmt: skip
        text = f"Split `{results['split']}`" + (
            f" ({results['skipped_split_pids']} split pids have no problem in the data and are skipped)"
            if results["skipped_split_pids"]
            else ""
        )
        text += f"; unparsable answers (scored wrong): {results['unparsable']}.\n\n" + md_table(head, rows)
        for key, title in (("by_topic", "topic"), ("by_category", "category")):
            rows = [[k, t["correct"], t["count"], t["acc_str"]] for k, t in acc[key].items()]
            text += f"\n### Accuracy by {title}\n\n" + md_table([title, "correct", "count", "acc (%)"], rows)
        if "lecture_frequency" in results:
            lf = results["lecture_frequency"]
            rows = [[f"<= {r['max_count']}", r["questions"], r["acc_str"]] for r in lf["rows"]]
            text += (
                "\n### Accuracy by lecture frequency in training (SciTune Table 4)\n\n"
                + md_table(["lecture seen", "#questions", "accuracy (%)"], rows)
                + f"\n{lf['no_lecture']} questions without a lecture left out; {lf['unseen']} lectures unseen.\n"
            )
        if "explanations" in results:
            text += _explanation_table(results["explanations"])
        return text

    def plots(self, results: dict[str, Any], out_dir: Path) -> list[str]:
        from scitune.eval.plots import bar_chart

        acc = results["accuracy"]
        bar_chart(out_dir / "groups.png", ["Avg", *GROUPS], {"accuracy": [acc["acc"], *(acc["groups"][g]["acc"]
                  for g in GROUPS)]}, title="ScienceQA accuracy by group (%)", ylabel="accuracy (%)")  # fmt: skip
        topics = acc["by_topic"]
        bar_chart(out_dir / "topics.png", list(topics), {"accuracy": [t["acc"] for t in topics.values()]},
                  title="ScienceQA accuracy by topic (%)", ylabel="accuracy (%)", horizontal=True)  # fmt: skip
        return ["groups.png", "topics.png"]


def _has_explanation(text: str) -> bool:
    """A generated text with reasoning to score (Table 5): LECTURE/SOLUTION markers, or text around "The answer
    is X" (bare letters and "X. option" answers have none)."""
    parts = split_explanation(text)
    return bool(parts.explanation) and (parts.marked or "The answer is" in text)


def _explanation_table(ex: dict[str, Any]) -> str:
    rows = []
    for subset in ("all", "correct", "incorrect"):
        for part in ("lecture", "solution", "explanation"):
            s = ex[subset][part]
            if s["count"]:
                rows.append([subset, part, s["count"], s["bleu1"], s["bleu4"], s["rouge_l"], s["similarity"]])
    head = ["answers", "part", "n", "BLEU-1", "BLEU-4", "ROUGE-L", f"similarity ({ex['similarity']})"]
    note = (
        f"{ex['questions']['all']} generated texts ({ex['questions']['correct']} correct, "
        f"{ex['questions']['incorrect']} incorrect); {ex['unmarked']} without LECTURE:/SOLUTION: markers."
    )
    return (
        "\n### Generated lecture / solution quality (SciTune Table 5)\n\n"
        + md_table(head, rows, 3)
        + "\n"
        + note
        + "\n"
    )
