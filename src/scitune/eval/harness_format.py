"""results.json in lm-evaluation-harness's layout too (``results``, ``versions``, ``n-shot``, ``n-samples``, ``config``,
``higher_is_better``, ``configs``, ``date``, ...), beside scitune's own keys, and the per-example
``samples_<task>.jsonl`` logs of ``--log_samples`` with the harness's per-sample keys."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from scitune.eval.benchmark import Benchmark, Example

log = logging.getLogger(__name__)

__all__ = ["FILTER", "harness_keys", "metric_stderr", "sample_file", "sample_records", "sample_values", "task_hash"]

FILTER = "none"
"""The harness names every metric ``"<metric>,<filter>"``; scitune applies no response filter."""
NOT_HIGHER_IS_BETTER: dict[str, bool | None] = {"failed": False, "judged": None, "figure_reading_chance": None}
"""Summary entries that are not scores, by exact name (llava-bench's judge counts, scifig-mcq's chance level);
``None`` is the harness's "neither"."""
_CONFIG_KEYS = ("device", "batch_size", "limit")


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _scale(summary_value: float, values: list[float]) -> float | None:
    """1 or 100: how the summary reports the mean of ``values`` (scitune's accuracies are percentages)."""
    mean = statistics.fmean(values)
    for scale in (1.0, 100.0):
        if math.isclose(summary_value, scale * mean, rel_tol=1e-9, abs_tol=1e-12):
            return scale
    return None


def sample_values(
    bench: Benchmark, examples: list[Example], records: dict[str, dict[str, Any]], results: dict[str, Any]
) -> dict[str, list[float]]:
    """Per-example values of the summary's metrics, one per example in order, on the summary's scale (their mean is
    the summary's number).

    From the benchmark's ``sample_scores(examples, records, results) -> {metric: [value, ...]}`` when it has one,
    else from the per-example tables its results hold (a dict of ``{metric: [one number per example]}``, e.g.
    truthfulqa-mc's ``per_question``, caption's ``per_caption``) whose mean is the summary's value.
    """
    summary = results.get("summary", {})
    hook = getattr(bench, "sample_scores", None)
    tables = (
        [hook(examples, records, results)] if hook is not None else [v for v in results.values() if isinstance(v, dict)]
    )
    out: dict[str, list[float]] = {}
    for table in tables:
        for metric, values in table.items():
            if metric in out or not _number(summary.get(metric)) or not isinstance(values, list):
                continue
            if len(values) != len(examples) or not values or not all(_number(v) for v in values):
                continue
            scale = _scale(float(summary[metric]), [float(v) for v in values])
            if scale is not None:
                out[metric] = [scale * float(v) for v in values]
    return out


def metric_stderr(metric: str, value: Any, per_sample: list[float] | None, n: int) -> float | str:
    """The harness's standard error of a mean: the sample standard deviation (ddof=1) / sqrt(n) of the per-example
    values; for an accuracy without them (``acc``, in percent, over all ``n`` examples), the same for 0/1 values:
    ``sqrt(p (1 - p) / (n - 1))``. ``"N/A"`` where neither is known, as the harness writes."""
    if per_sample is not None and len(per_sample) > 1:
        return statistics.stdev(per_sample) / math.sqrt(len(per_sample))
    if metric == "acc" and _number(value) and n > 1 and 0.0 <= value <= 100.0:
        p = value / 100.0
        return 100.0 * math.sqrt(p * (1.0 - p) / (n - 1))
    return "N/A"


def _task_results(task: str, results: dict[str, Any], per_sample: dict[str, list[float]], n: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"alias": task}
    for metric, value in results.get("summary", {}).items():
        if isinstance(value, bool) or not (value is None or isinstance(value, int | float)):
            continue  # not a number: no harness metric
        entry[f"{metric},{FILTER}"] = value
        entry[f"{metric}_stderr,{FILTER}"] = metric_stderr(metric, value, per_sample.get(metric), n)
    return entry


def _git_hash() -> str | None:
    """The commit of the scitune source tree, when it runs from a git checkout (src layout: <repo>/src/scitune)."""
    import scitune

    repo = Path(scitune.__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def _env_info() -> str:
    import torch

    from scitune import __version__

    cuda = torch.version.cuda if torch.cuda.is_available() else "not available"
    return (
        f"scitune {__version__}; torch {torch.__version__} (CUDA {cuda}); Python {sys.version.split()[0]}; "
        f"{platform.platform()}"
    )


def _model_config(bench: Benchmark, source: str) -> dict[str, Any]:
    opts = bench.opts
    kind, _, where = str(source).partition(":")
    model = {"checkpoint": "scitune", "llm": "hf", "base": "hf", "predictions": "predictions"}.get(kind, kind)
    args = f"predictions={where}" if kind == "predictions" else f"pretrained={where}"
    if opts.dtype and kind != "predictions":
        args += f",dtype={opts.dtype}"
    gen = None
    if bench.mode != "loglik":  # generate, or complete (raw-text generation)
        gen = {"max_new_tokens": opts.max_new_tokens, "temperature": float(getattr(opts, "temperature", 0.0))}
    seed = getattr(opts, "seed", None)
    return {"model": model, "model_args": args, **{k: getattr(opts, k) for k in _CONFIG_KEYS}, "batch_sizes": [],
            "use_cache": None, "bootstrap_iters": 0, "gen_kwargs": gen, "random_seed": seed}  # fmt: skip


def _n_shot(bench: Benchmark) -> int | list[int]:
    """``--shots`` of few-shot benchmarks (vqa scores several counts, one metric each: the list), else 0."""
    shots = getattr(bench.opts, "shots", 0)
    if isinstance(shots, list | tuple):
        return int(shots[0]) if len(shots) == 1 else [int(s) for s in shots]
    return int(shots)


def _task_config(bench: Benchmark, task: str, metrics: list[str], hib: dict[str, bool | None]) -> dict[str, Any]:
    from scitune import __version__

    opts = bench.opts
    output_type = "multiple_choice" if bench.mode == "loglik" else "generate_until"
    config: dict[str, Any] = {
        "task": task,
        "dataset_path": opts.data,
        "output_type": output_type,
        "num_fewshot": _n_shot(bench),
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": hib[m]} for m in metrics],
        "metadata": {"version": __version__, "scitune_options": asdict(opts)},
    }
    if bench.mode != "loglik":
        config["generation_kwargs"] = {"max_new_tokens": opts.max_new_tokens, "do_sample": False}
    return config


def harness_keys(
    bench: Benchmark,
    tasks: list[tuple[str, dict[str, Any], dict[str, list[float]], int]],
    n_original: int,
    started: float,
    task_hashes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """lm-evaluation-harness's top-level results keys for ``tasks``: ``(task name, its results, its per-example
    values (`sample_values`), the number of examples scored)``; the first is the run's main task."""
    from scitune import __version__

    try:
        import transformers

        transformers_version: str | None = transformers.__version__
    except ImportError:  # pragma: no cover - a core dependency
        transformers_version = None
    out: dict[str, Any] = {"results": {}, "versions": {}, "n-shot": {}, "higher_is_better": {}, "n-samples": {},
                           "configs": {}}  # fmt: skip
    for task, res, per_sample, n in tasks:
        entry = _task_results(task, res, per_sample, n)
        metrics = [k.removesuffix(f",{FILTER}") for k in entry if k != "alias" and "_stderr," not in k]
        hib = {m: NOT_HIGHER_IS_BETTER.get(m, True) for m in metrics}
        out["results"][task] = entry
        out["versions"][task] = __version__
        out["n-shot"][task] = _n_shot(bench)
        out["higher_is_better"][task] = hib
        out["n-samples"][task] = {"original": n_original, "effective": n}
        out["configs"][task] = _task_config(bench, task, metrics, hib)
    main = tasks[0][1]
    now = time.time()
    out.update(
        config=_model_config(bench, main.get("source", "")),
        git_hash=_git_hash(),
        date=started,
        transformers_version=transformers_version,
        pretty_env_info=_env_info(),
        task_hashes=task_hashes or {},
        model_name=str(main.get("source", "")).partition(":")[2],
        total_evaluation_time_seconds=str(now - started),
    )
    return out


# --------------------------------------------------------------------------------------------------------------------
# --log_samples: samples_<task>.jsonl
# --------------------------------------------------------------------------------------------------------------------
def sample_file(task: str) -> str:
    """``samples_<task>.jsonl``: the harness's ``samples_<task>_<date>.jsonl`` without the date, so that a rerun
    replaces its own file."""
    return f"samples_{task}.jsonl"


def _arguments(bench: Benchmark, example: Example, prompt: str) -> dict[str, dict[str, Any]]:
    """The requests as the harness saves them: ``{"gen_args_<i>": {"arg_0": context, "arg_1": ...}}``."""
    if bench.mode == "loglik":
        return {f"gen_args_{i}": {"arg_0": example.text, "arg_1": c} for i, c in enumerate(example.choices)}
    gen = {"max_new_tokens": bench.opts.max_new_tokens, "temperature": float(getattr(bench.opts, "temperature", 0.0))}
    return {"gen_args_0": {"arg_0": prompt, "arg_1": gen}}


def _responses(record: dict[str, Any] | None) -> list[str]:
    """What the model answered (a generation, a chosen index, or one log-probability per choice), as text."""
    if record is None:
        return []
    if "logprobs" in record:
        return [str(lp) for lp in record["logprobs"]]
    if "index" in record and "text" not in record:
        return [str(record["index"])]
    return [str(record.get("text", ""))]


def sample_records(
    bench: Benchmark,
    examples: list[Example],
    records: dict[str, dict[str, Any]],
    per_sample: dict[str, list[float]],
) -> list[dict[str, Any]]:
    """One harness per-sample record per example: ``doc_id``, ``doc``, ``target``, ``arguments``, ``resps``,
    ``filtered_resps``, ``filter``, ``metrics`` and each metric's value, ``doc_hash``, ``prompt_hash``,
    ``target_hash``. A missing prediction has empty responses (and is scored wrong, as in results.json)."""
    out = []
    for i, example in enumerate(examples):
        record = records.get(example.id)
        prompt = (record or {}).get("prompt") or bench.prompt_text(example)
        doc = asdict(example)
        target = example.target if isinstance(example.target, str) else json.dumps(example.target, ensure_ascii=False)
        responses = _responses(record)
        sample: dict[str, Any] = {
            "doc_id": i,
            "doc": doc,
            "target": target,
            "arguments": _arguments(bench, example, prompt),
            "resps": [[r] for r in responses],
            "filtered_resps": responses,
            "filter": FILTER,
            "metrics": list(per_sample),
        }
        sample.update({m: values[i] for m, values in per_sample.items()})
        sample["doc_hash"] = _hash(json.dumps(doc, indent=2, ensure_ascii=False, default=str))
        sample["prompt_hash"] = _hash(prompt)
        sample["target_hash"] = _hash(target)
        out.append(sample)
    return out


def task_hash(samples: list[dict[str, Any]]) -> str:
    """The harness's ``task_hashes`` entry: SHA-256 of every sample's doc, prompt and target hashes in order."""
    return _hash("".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in samples))
