"""LLaVA-Bench-style judged evaluation: a judge model rates the reference answer and the model's answer 1-10 on
the same question; the relative score is mean(model) / mean(reference) x 100, per category and overall, as
LLaVA's ``eval_gpt_review_bench.py`` + ``summarize_gpt_review.py``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scitune.eval.benchmark import BENCHMARKS, Benchmark, EvalOptions, Example, ScoreContext, resolve_image
from scitune.io import DataError, iter_jsonl, read_json

__all__ = ["JUDGE_PROMPT", "JUDGE_SYSTEM", "LlavaBenchBenchmark", "LlavaBenchOptions", "review_content"]

JUDGE_SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."
JUDGE_PROMPT = (
    "We would like to request your feedback on the performance of two AI assistants in response to the user "
    "question displayed above. The user asks the question on observing an image. For your reference, the visual "
    "content in the image is represented with a few sentences describing the image. \nPlease rate the helpfulness, "
    "relevance, accuracy, level of details of their responses. Each assistant receives an overall score on a scale "
    "of 1 to 10, where a higher score indicates better overall performance.\nPlease first output a single line "
    "containing only two values indicating the scores for Assistant 1 and 2, respectively. The two scores are "
    "separated by a space.\nIn the subsequent line, please provide a comprehensive explanation of your evaluation, "
    "avoiding any potential bias and ensuring that the order in which the responses were presented does not affect "
    "your judgment."
)
"""LLaVA's ``rule.json`` prompt for the ``llava_bench_{conv,detail,complex}`` categories (the same for all three)."""


def parse_score_pair(review: str) -> tuple[float, float] | None:
    """The two scores on the first line of a review, as LLaVA's ``eval_gpt_review_bench.parse_score``: commas become
    spaces, the line is split on single spaces and must give exactly two numbers; None otherwise (LLaVA records
    ``[-1, -1]`` then)."""
    parts = review.split("\n")[0].replace(",", " ").split(" ")
    if len(parts) != 2:
        return None
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        return None


def review_content(caption: str, question: str, reference: str, answer: str, prompt: str = JUDGE_PROMPT) -> str:
    """The judge's user message, laid out as LLaVA's: reference = Assistant 1, the evaluated model = Assistant 2."""
    return (
        f"[Context]\n{caption}\n\n[Question]\n{question}\n\n"
        f"[Assistant 1]\n{reference}\n\n[End of Assistant 1]\n\n"
        f"[Assistant 2]\n{answer}\n\n[End of Assistant 2]\n\n[System]\n{prompt}\n\n"
    )


@dataclass
class LlavaBenchOptions(EvalOptions):
    """LLaVA-Bench: --data a folder with questions.jsonl (question_id, image, text, category), context.jsonl
    (image, caption), answers_gpt4.jsonl (reference answers) and images/."""

    judge_url: str | None = None
    """OpenAI-compatible endpoint of the judge (e.g. http://127.0.0.1:8000/v1); key from SCITUNE_JUDGE_API_KEY."""
    judge_model: str = "gpt-4-0314"
    """Judge model name sent to the endpoint (LLaVA used gpt-4-0314)."""
    reference: str | None = None
    """Reference answers (JSONL question_id, text); default <data>/answers_gpt4.jsonl."""
    rules: str | None = None
    """LLaVA's rule.json to take the judge prompts from (keys llava_bench_<category>); default: built-in prompt."""
    judge_timeout: float = 60.0
    """Seconds allowed for connecting to the judge and for each read of its reply."""
    judge_retries: int = 4
    """Further attempts per item after a failure (with exponential backoff)."""
    judge_backoff: float = 1.0
    """Seconds before the first retry (doubled each time)."""


@BENCHMARKS.register("llava-bench")
class LlavaBenchBenchmark(Benchmark):
    """Judge-rated relative score vs a reference answer set (LLaVA-Bench in-the-wild / COCO)."""

    name = "llava-bench"
    mode = "generate"
    Options = LlavaBenchOptions
    opts: LlavaBenchOptions

    def examples(self) -> list[Example]:
        if not self.opts.judge_url:  # checked before any generation, which would otherwise be wasted
            raise ValueError("llava-bench needs --judge_url (an OpenAI-compatible endpoint) to score answers")
        root = Path(self.opts.data)
        captions: dict[str, str] = {}
        if (root / "context.jsonl").is_file():
            for _, c in iter_jsonl(root / "context.jsonl"):
                cap = c.get("caption", "")
                captions[str(c.get("image"))] = "\n".join(cap) if isinstance(cap, list) else str(cap)
        out = []
        for lineno, q in iter_jsonl(root / "questions.jsonl"):
            if not all(k in q for k in ("question_id", "image", "text")):
                raise DataError(f"{root / 'questions.jsonl'}:{lineno}: needs question_id, image and text")
            meta = {"category": q.get("category", "all"), "caption": captions.get(str(q["image"]), "")}
            out.append(Example(str(q["question_id"]), q["text"], [resolve_image(q["image"], [root / "images", root])],
                               meta=meta))  # fmt: skip
        return out

    def _references(self) -> dict[str, str]:
        path = Path(self.opts.reference) if self.opts.reference else Path(self.opts.data) / "answers_gpt4.jsonl"
        return {str(r["question_id"]): r["text"] for _, r in iter_jsonl(path) if "question_id" in r and "text" in r}

    def _prompt(self, category: str) -> str:
        if not self.opts.rules:
            return JUDGE_PROMPT
        rules = read_json(self.opts.rules)
        rule = rules.get(f"llava_bench_{category}") if isinstance(rules, dict) else None
        if not isinstance(rule, dict) or "prompt" not in rule:
            raise DataError(f"{self.opts.rules}: no rule 'llava_bench_{category}' with a prompt")
        return rule["prompt"]

    def score(self, examples: list[Example], predictions: dict[str, dict[str, Any]], ctx: ScoreContext) -> dict:
        from tqdm import tqdm

        from scitune.eval.runner import PredictionLog
        from scitune.llm_client import JudgeClient, JudgeError

        judge = JudgeClient(self.opts.judge_url, self.opts.judge_model, timeout=self.opts.judge_timeout,
                            retries=self.opts.judge_retries, backoff=self.opts.judge_backoff)  # fmt: skip
        refs = self._references()
        cache = PredictionLog(ctx.out_dir / "reviews.jsonl")  # judged items survive an interruption
        scores: dict[str, tuple[float, float]] = {}
        failures: list[dict[str, str]] = []
        try:
            for e in tqdm(examples, desc="llava-bench: judge", unit="item", disable=not ctx.progress):
                if e.id not in refs:
                    failures.append({"id": e.id, "error": "no reference answer"})
                    continue
                # a missing answer is judged as an empty one (so it scores low rather than vanishing)
                answer = predictions.get(e.id, {}).get("text", "")
                content = review_content(
                    e.meta["caption"], e.text, refs[e.id], answer, self._prompt(e.meta["category"])
                )
                key = hashlib.sha256(json.dumps([self.opts.judge_model, content]).encode()).hexdigest()
                cached = cache.done.get(e.id)
                if cached and cached.get("key") == key:
                    scores[e.id] = tuple(cached["tuple"])  # type: ignore[assignment]
                    continue
                try:
                    review = judge.complete(JUDGE_SYSTEM, content)
                except JudgeError as err:
                    failures.append({"id": e.id, "error": str(err)})
                    continue
                pair = parse_score_pair(review)
                if pair is None:
                    failures.append({"id": e.id, "error": f"unparsable judge reply: {review[:80]!r}"})
                    continue
                scores[e.id] = pair
                cache.append([{"id": e.id, "key": key, "tuple": list(pair), "content": review}])
        finally:
            cache.close()
        return self._aggregate(examples, scores, failures)

    def _aggregate(self, examples: list[Example], scores: dict[str, tuple[float, float]], failures: list) -> dict:
        cats: dict[str, list[tuple[float, float]]] = {}
        for e in examples:
            if e.id in scores:
                cats.setdefault(e.meta["category"], []).append(scores[e.id])
                cats.setdefault("all", []).append(scores[e.id])
        table = {}
        for cat, pairs in sorted(cats.items()):
            ref = sum(p[0] for p in pairs) / len(pairs)
            mod = sum(p[1] for p in pairs) / len(pairs)
            table[cat] = {
                "count": len(pairs),
                "reference": ref,
                "model": mod,
                "relative": 100 * mod / ref if ref else None,
            }
        summary = {f"relative_{c}": t["relative"] for c, t in table.items()}
        summary["judged"] = len(scores)
        summary["failed"] = len(failures)
        return {"summary": summary, "categories": table, "failures": failures, "judge_model": self.opts.judge_model}

    def report(self, results: dict[str, Any]) -> str:
        from scitune.eval.report import md_table

        rows = [[c, t["count"], t["reference"], t["model"], t["relative"]] for c, t in results["categories"].items()]
        text = (
            f"Judge `{results['judge_model']}` rates the reference answer and the model's answer 1-10; relative = "
            "mean(model) / mean(reference) x 100. Items whose judging failed are left out of the means and listed "
            "below.\n\n" + md_table(["category", "judged", "reference", "model", "relative (%)"], rows)
        )
        if results["failures"]:
            text += f"\n### Failed items ({len(results['failures'])})\n\n"
            text += md_table(["id", "error"], [[f["id"], f["error"]] for f in results["failures"][:50]])
        return text

    def plots(self, results: dict[str, Any], out_dir: Path) -> list[str]:
        from scitune.eval.plots import bar_chart

        cats = results["categories"]
        if not cats:
            return []
        bar_chart(out_dir / "llava_bench.png", list(cats), {"relative": [t["relative"] for t in cats.values()]},
                  title="LLaVA-Bench relative score (%)", ylabel="%")  # fmt: skip
        return ["llava_bench.png"]
