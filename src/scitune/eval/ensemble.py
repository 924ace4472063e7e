"""ScienceQA ensembling of two prediction files (LLaVA, seed 002): *complement* takes B's answer where A gives none
that parses; *judge* asks a judge model behind an OpenAI-compatible endpoint for the final answer where A and B
disagree. The combined predictions are scored by the ``scienceqa`` benchmark like any prediction file."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scitune.eval.scienceqa import OPTION_LETTERS, parse_answer, predicted_index, score_scienceqa
from scitune.io import DataError, write_json, write_jsonl, write_text

__all__ = [
    "JUDGE_SYSTEM",
    "MODES",
    "Decision",
    "EnsembleOptions",
    "combine",
    "judge_prompt",
    "parse_judge_answer",
    "read_prediction_pair",
    "run_ensemble",
]

MODES = ("complement", "judge")
PREDICTIONS_FILE = "ensemble_predictions.jsonl"
JUDGE_FILE = "judge.jsonl"
JUDGE_SYSTEM = "You are an expert science teacher who decides the correct answer to multiple-choice questions."


@dataclass
class EnsembleOptions:
    """Combine two ScienceQA prediction files and score the result (LLaVA: model + GPT-4 ensembles)."""

    a: str = ""
    """Predictions of model A, the primary one (LLaVA answer JSONL, ScienceQA result JSON or scitune predictions)."""
    b: str = ""
    """Predictions of model B: the same problems as A."""
    mode: str = "complement"
    """complement: B's answer where A's does not parse; judge: a judge model decides where A and B disagree."""
    data: str = ""
    """ScienceQA problems.json or a folder holding problems.json and pid_splits.json."""
    split: str = "test"
    """Split of pid_splits.json to score."""
    pid_splits: str | None = None
    """pid_splits.json; default: next to the problems file."""
    out: str = ""
    """Output folder: ensemble_predictions.jsonl, results.json, report.md, plots (and judge.jsonl)."""
    judge_url: str | None = None
    """judge mode: OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1); key from SCITUNE_JUDGE_API_KEY."""
    judge_model: str = "gpt-4"
    """judge mode: model name sent to the endpoint (LLaVA used GPT-4)."""
    judge_timeout: float = 60.0
    """Seconds allowed for connecting to the judge and for each read of its reply."""
    judge_retries: int = 4
    """Further attempts per problem after a failure or an unparsable reply (exponential backoff)."""
    judge_backoff: float = 1.0
    """Seconds before the first retry (doubled each time)."""
    progress: bool = True
    """Show progress bars."""
    overwrite: bool = False
    """Write into an --out folder that holds files scitune did not write (they are kept, never replaced)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mode == "judge" and not self.judge_url:
            raise ValueError("--mode judge needs --judge_url (an OpenAI-compatible endpoint)")
        for flag in ("a", "b", "data", "out"):
            if not getattr(self, flag):
                raise ValueError(f"--{flag} is required")


@dataclass(frozen=True)
class Answer:
    """One model's answer to a problem: the option index (-1 = none parsed) and its text, if any."""

    index: int
    text: str | None


@dataclass(frozen=True)
class Decision:
    """The combined answer to one problem and where it came from (a, b, judge, or none: no answer)."""

    index: int
    source: str
    text: str | None = None


def _answers(pset: Any, path: str, problems: Mapping[str, Mapping[str, Any]]) -> dict[str, Answer]:
    if pset.malformed:
        raise DataError(f"{path}: {len(pset.malformed)} unusable record(s), first: {'; '.join(pset.malformed[:3])}")
    if pset.duplicates:
        raise DataError(f"{path}: problem(s) predicted twice: {', '.join(pset.duplicates[:10])}")
    out = {}
    for pid, rec in pset.records.items():
        if pid in problems:
            prob = problems[pid]
            idx = predicted_index(prob, rec["index"] if "index" in rec else rec.get("text", ""))
            out[pid] = Answer(idx if 0 <= idx < len(prob["choices"]) else -1, rec.get("text"))
    return out


def _ids(ids: list[str]) -> str:
    return ", ".join(ids[:10]) + (f" ... ({len(ids)} in all)" if len(ids) > 10 else "")


def read_prediction_pair(bench: Any, a: str, b: str) -> tuple[list[str], dict[str, Answer], dict[str, Answer]]:
    """Read both files as ``scitune eval scienceqa --predictions`` reads one; they must answer the same problems of
    the split.

    Returns:
        ``(pids, answers_a, answers_b)`` with the pids of the split in split order.

    Raises:
        DataError: naming the ids that only one file predicts, ids outside the split, or unusable records.
    """
    examples = bench.examples()
    split_ids = {e.id for e in examples}
    psets = {path: bench.read_predictions(path, examples) for path in (a, b)}
    ids = {path: list(p.records) for path, p in psets.items()}
    only_a = [i for i in ids[a] if i not in set(ids[b])]
    only_b = [i for i in ids[b] if i not in set(ids[a])]
    if only_a or only_b:
        raise DataError(
            f"the prediction files answer different problems ({len(ids[a])} in {a}, {len(ids[b])} in {b}): "
            f"only in A: [{_ids(only_a)}]; only in B: [{_ids(only_b)}]"
        )
    outside = [i for i in ids[a] if i not in split_ids]
    if outside:
        raise DataError(f"{a} and {b} predict problems not in split {bench.opts.split!r}: [{_ids(outside)}]")
    return (
        [e.id for e in examples if e.id in set(ids[a])],
        _answers(psets[a], a, bench.problems),
        _answers(psets[b], b, bench.problems),
    )


def judge_prompt(problem: Mapping[str, Any], text_a: str, text_b: str) -> str:
    """The judge's user message: the question with its context and lettered options, both answers, and the
    requested last line ``The answer is X.``."""
    options = " ".join(f"({OPTION_LETTERS[i]}) {c}" for i, c in enumerate(problem["choices"]))
    image = " It comes with an image that you cannot see." if problem.get("image") else ""
    return (
        f"The following multiple-choice question is from a science exam.{image}\n\n"
        f"Context: {problem.get('hint') or 'N/A'}\nQuestion: {problem['question']}\nOptions: {options}\n\n"
        f"Two students gave different answers.\n\n[Student 1]\n{text_a}\n[End of Student 1]\n\n"
        f"[Student 2]\n{text_b}\n[End of Student 2]\n\n"
        "Consider the question and both answers and decide which option is correct; it may be an option that "
        'neither student chose. Explain briefly, then end with a last line of the form "The answer is X." where X '
        "is the option's letter."
    )


_LAST_ANSWER = re.compile(r"The answer is \(?([A-Z])\)?")


def parse_judge_answer(reply: str, n_options: int) -> int:
    """The judge's option: the last "The answer is X" (or "(X)") on the reply's last non-empty line, as the prompt
    asks; else LLaVA's `parse_answer` on the whole reply (a bare letter, "X. ...", one "The answer is X."); -1 when
    neither gives a letter among the options. The last line comes first because a judge may quote the students."""
    lines = [line for line in reply.splitlines() if line.strip()]
    found = _LAST_ANSWER.findall(lines[-1]) if lines else []
    if found:
        return OPTION_LETTERS.index(found[-1]) if found[-1] in OPTION_LETTERS[:n_options] else -1
    return parse_answer(reply.strip(), [None] * n_options)


def _as_text(ans: Answer) -> str:
    if ans.text and ans.text.strip():
        return ans.text.strip()
    return f"The answer is {OPTION_LETTERS[ans.index]}." if ans.index >= 0 else "(no answer)"


def _complement(a: Answer, b: Answer) -> Decision:
    if a.index >= 0:
        return Decision(a.index, "a", a.text)
    if b.index >= 0:
        return Decision(b.index, "b", b.text)
    return Decision(-1, "none", a.text)


def combine(
    pids: list[str],
    problems: Mapping[str, Mapping[str, Any]],
    a: Mapping[str, Answer],
    b: Mapping[str, Answer],
    mode: str,
    judge: Any = None,
    cache_path: Path | None = None,
    progress: bool = True,
) -> tuple[dict[str, Decision], list[dict[str, str]]]:
    """Combine A's and B's answers per problem.

    complement: A's answer when it parses, else B's (LLaVA's "GPT-4 complement" with A = GPT-4). judge: where A and
    B give different options (one of them possibly none), ``judge.chat`` is asked for the final option; a judge
    call that fails or stays unparsable after its retries falls back to the complement rule and is listed.

    Returns:
        ``({pid: Decision}, failures as [{"id", "error"}])``.
    """
    from tqdm import tqdm

    from scitune.eval.runner import PredictionLog
    from scitune.llm_client import JudgeError, ReplyError

    decisions = {pid: _complement(a[pid], b[pid]) for pid in pids}
    if mode == "complement":
        return decisions, []
    disputed = [pid for pid in pids if a[pid].index != b[pid].index]
    cache = PredictionLog(cache_path) if cache_path is not None else None  # judged problems survive a rerun
    failures = []
    try:
        for pid in tqdm(disputed, desc="ensemble: judge", unit="problem", disable=not progress):
            n = len(problems[pid]["choices"])
            content = judge_prompt(problems[pid], _as_text(a[pid]), _as_text(b[pid]))
            key = hashlib.sha256(json.dumps([judge.model, JUDGE_SYSTEM, content]).encode()).hexdigest()
            cached = cache.done.get(pid) if cache is not None else None
            if cached and cached.get("key") == key:
                decisions[pid] = Decision(cached["index"], "judge", cached["text"])
                continue

            def parse(reply: str, n: int = n) -> tuple[int, str]:
                idx = parse_judge_answer(reply, n)
                if idx < 0:
                    raise ReplyError(f"no 'The answer is X.' with X among {n} options in {reply[-80:]!r}")
                return idx, reply

            messages = [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": content}]
            try:
                idx, reply = judge.chat(messages, parse=parse)
            except JudgeError as e:
                failures.append({"id": pid, "error": str(e)})
                continue
            decisions[pid] = Decision(idx, "judge", reply)
            if cache is not None:
                cache.append([{"id": pid, "key": key, "index": idx, "text": reply}])
    finally:
        if cache is not None:
            cache.close()
    return decisions, failures


def _counts(pids: list[str], a: Mapping[str, Answer], b: Mapping[str, Answer], dec: Mapping[str, Decision]) -> dict:
    judged = [p for p in pids if dec[p].source == "judge"]
    return {
        "problems": len(pids),
        "a_unparsable": sum(a[p].index < 0 for p in pids),
        "b_unparsable": sum(b[p].index < 0 for p in pids),
        "agree": sum(a[p].index == b[p].index for p in pids),
        "disagree": sum(a[p].index != b[p].index for p in pids),
        "source": dict(Counter(dec[p].source for p in pids)),
        "judge_sided_with": dict(Counter(
            "a" if dec[p].index == a[p].index else "b" if dec[p].index == b[p].index else "neither" for p in judged
        )),
    }  # fmt: skip


def run_ensemble(opts: EnsembleOptions) -> dict[str, Any]:
    """Read A and B, combine them per ``opts.mode``, write ``ensemble_predictions.jsonl`` and score it with the
    ``scienceqa`` benchmark exactly as ``scitune eval scienceqa --predictions`` does; A's and B's own accuracies
    and the combination counts are added to results.json and report.md.

    Returns:
        The results (as written to results.json).
    """
    from scitune.eval.runner import EVAL_WRITES, run_benchmark
    from scitune.eval.scienceqa_benchmark import ScienceQABenchmark, ScienceQAOptions
    from scitune.llm_client import JudgeClient
    from scitune.outputs import claim_output_folder

    out = claim_output_folder(opts.out, "eval", EVAL_WRITES, opts.overwrite)
    sqa = ScienceQAOptions(data=opts.data, split=opts.split, pid_splits=opts.pid_splits, out=str(out),
                           progress=opts.progress)  # fmt: skip
    reader = ScienceQABenchmark(sqa)
    pids, a, b = read_prediction_pair(reader, opts.a, opts.b)
    judge = None
    if opts.mode == "judge":
        judge = JudgeClient(opts.judge_url or "", opts.judge_model, timeout=opts.judge_timeout,
                            retries=opts.judge_retries, backoff=opts.judge_backoff, temperature=0.0)  # fmt: skip
    dec, failures = combine(pids, reader.problems, a, b, opts.mode, judge, out / JUDGE_FILE, opts.progress)
    path = out / PREDICTIONS_FILE
    write_jsonl(path, ({"id": p, "index": dec[p].index, "source": dec[p].source,
                        **({"text": dec[p].text} if dec[p].text else {})} for p in pids))  # fmt: skip
    sqa.predictions = str(path)
    results = run_benchmark(ScienceQABenchmark(sqa))
    split_pids = [e.id for e in reader.examples()]
    own = {k: score_scienceqa(reader.problems, {p: v.index for p, v in ans.items()}, split_pids)["acc"]
           for k, ans in (("a", a), ("b", b))}  # fmt: skip
    results["ensemble"] = {
        "mode": opts.mode, "a": str(Path(opts.a).resolve()), "b": str(Path(opts.b).resolve()),
        "judge_model": opts.judge_model if judge else None, "accuracy_a": own["a"], "accuracy_b": own["b"],
        "accuracy": results["summary"]["acc"], **_counts(pids, a, b, dec), "judge_failed": len(failures),
        "failures": failures,
    }  # fmt: skip
    write_json(out / "results.json", results)
    write_text(out / "report.md", (out / "report.md").read_text(encoding="utf-8") + _report(results["ensemble"]))
    write_json(out / "ensemble.json", {"options": asdict(opts), **results["ensemble"]})
    return results


def _report(ens: dict[str, Any]) -> str:
    from scitune.eval.report import md_table

    rows = [["A", ens["accuracy_a"]], ["B", ens["accuracy_b"]], [f"ensemble ({ens['mode']})", ens["accuracy"]]]
    text = (
        f"\n## Ensemble ({ens['mode']})\n\n- A: `{ens['a']}`\n- B: `{ens['b']}`\n"
        f"- problems: {ens['problems']}; A unparsable: {ens['a_unparsable']}; B unparsable: {ens['b_unparsable']}; "
        f"A and B disagree: {ens['disagree']}\n- answers taken from: "
        + ", ".join(f"{k} {v}" for k, v in sorted(ens["source"].items()))
        + "\n"
    )
    if ens["mode"] == "judge":
        sided = ", ".join(f"{k} {v}" for k, v in sorted(ens["judge_sided_with"].items())) or "-"
        text += f"- judge `{ens['judge_model']}` sided with: {sided}; judge calls failed: {ens['judge_failed']}\n"
    text += "\n" + md_table(["predictions", "accuracy (%)"], rows)
    if ens["failures"]:
        text += "\n### Judge failures (the complement answer was kept)\n\n"
        text += md_table(["id", "error"], [[f["id"], f["error"]] for f in ens["failures"][:50]])
    return text
