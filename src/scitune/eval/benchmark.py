"""The benchmark protocol and the `BENCHMARKS` registry: examples from the data, how a model answers them (batched
generation or log-likelihood of choices), how predictions made elsewhere are read, and how answers are scored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from scitune.io import DataError, check_input_file, read_text
from scitune.registry import Registry

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "EvalOptions",
    "Example",
    "PredictionSet",
    "ScoreContext",
    "read_predictions",
    "resolve_image",
]

BENCHMARKS: Registry[type[Benchmark]] = Registry("benchmark")
"""Benchmark classes by kebab-case name (`scitune ls benchmarks`)."""


@dataclass
class EvalOptions:
    """Options every benchmark takes; each benchmark's options dataclass extends this one."""

    data: str = ""
    """The benchmark's data: a file or folder, see the benchmark's description."""
    checkpoint: str | None = None
    """A scitune checkpoint folder to evaluate (its model generates or scores the examples)."""
    llm: str | None = None
    """Text-only benchmarks: evaluate a plain Hugging Face causal LM folder or hub id instead of a checkpoint."""
    predictions: str | None = None
    """Score predictions made elsewhere instead of running a model (LLaVA answer JSONL, ScienceQA result JSON, or
    a predictions.jsonl of an earlier run); needs --out."""
    out: str | None = None
    """Output folder: predictions.jsonl, results.json, report.md and the plots. Default <checkpoint>/eval/<name>."""
    batch_size: int = 8
    """Prompts (generation) or sequences (log-likelihood) per forward batch."""
    max_new_tokens: int = 256
    """Most tokens generated per answer."""
    device: str = "auto"
    """Torch device for the model; auto = cuda when available, else cpu."""
    dtype: str | None = None
    """Override the model's dtype (float32, bfloat16, float16)."""
    limit: int | None = None
    """Evaluate only the first N examples (smoke tests); None = all."""
    progress: bool = True
    """Show progress bars."""
    overwrite: bool = False
    """Write into an --out folder that holds files scitune did not write (they are kept, never replaced)."""
    log_samples: bool = False
    """Also write samples_<benchmark>.jsonl into --out: one line per example with lm-evaluation-harness's per-sample
    keys (doc, target, arguments, resps, the example's metric values, hashes)."""


@dataclass
class Example:
    """One benchmark item: what the model is asked and what is expected."""

    id: str
    text: str = ""
    """The user prompt (generation) or the context that the choices continue (log-likelihood)."""
    images: list[str] = field(default_factory=list)
    """Image paths, in prompt order."""
    choices: list[str] = field(default_factory=list)
    """Log-likelihood benchmarks: the continuations scored after ``text``."""
    target: Any = None
    """The gold answer, in the benchmark's own terms."""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class PredictionSet:
    """Predictions read from a file: ``records[id]`` holds ``text``, ``index`` or ``logprobs``; problems counted."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    malformed: list[str] = field(default_factory=list)
    """``file:line: problem`` for every line or record that could not be used."""
    duplicates: list[str] = field(default_factory=list)
    """Ids predicted more than once (the last prediction is kept, as the official scorers' dicts do)."""


@dataclass
class ScoreContext:
    """What scoring may need besides the predictions: the output folder (caches, plots) and progress bars."""

    out_dir: Path
    progress: bool = True


class Benchmark:
    """Base class of every benchmark. Subclasses set ``name``, ``mode`` and ``Options`` and implement
    `examples` and `score`; `report` and `plots` render the results.

    Args:
        opts: the benchmark's options (an instance of its ``Options`` dataclass).
    """

    name: ClassVar[str] = ""
    mode: ClassVar[str] = "generate"
    """``generate`` (the model writes an answer), ``loglik`` (the model scores ``Example.choices``) or ``complete``
    (a text-only benchmark's LLM continues the raw text, through the class's ``predict_text``)."""
    Options: ClassVar[type[EvalOptions]] = EvalOptions
    requires: ClassVar[tuple[str, ...]] = ()
    """Modules the benchmark cannot score without (checked through `scitune.extras.require` before any work)."""

    def __init__(self, opts: EvalOptions) -> None:
        self.opts = opts

    # ---- data ----
    def examples(self) -> list[Example]:
        """The benchmark's examples, in a stable order (ids unique)."""
        raise NotImplementedError

    def prompt_text(self, example: Example) -> str:
        """The user turn sent to the model (generation); images are placed before it."""
        return example.text

    # ---- predictions made elsewhere ----
    def prediction_key(self, record: dict[str, Any], examples_by_id: dict[str, Example]) -> str | None:
        """The example id a foreign prediction record answers (None: it has no usable id)."""
        for key in ("id", "question_id", "pid"):
            value = record.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool):
                return str(value)
        return None

    def read_predictions(self, path: str | os.PathLike[str], examples: list[Example]) -> PredictionSet:
        """Read a prediction file (see `read_predictions`), matching records to examples with `prediction_key`."""
        by_id = {e.id: e for e in examples}
        return read_predictions(path, lambda rec: self.prediction_key(rec, by_id))

    # ---- scoring and rendering ----
    def score(self, examples: list[Example], predictions: dict[str, dict[str, Any]], ctx: ScoreContext) -> dict:
        """Score the predictions (missing ones count as wrong). The result has a flat ``summary`` of headline
        numbers (used by ``scitune eval report``) and whatever tables the benchmark reports."""
        raise NotImplementedError

    def report(self, results: dict[str, Any]) -> str:
        """Markdown body of report.md for ``results`` (tables; the runner adds the header, inputs and plots)."""
        from scitune.eval.report import md_table

        rows = [[k, _fmt(v)] for k, v in results.get("summary", {}).items()]
        return md_table(["metric", "value"], rows)

    def plots(self, results: dict[str, Any], out_dir: Path) -> list[str]:
        """Write PNG plots into ``out_dir``; return their file names."""
        return []


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------------------------------------------------
# Reading predictions made elsewhere: tolerant, every problem counted and located
# --------------------------------------------------------------------------------------------------------------------
_TEXT_KEYS = ("text", "prediction", "answer", "output")


def _normalize(record: dict[str, Any]) -> dict[str, Any] | str:
    """The usable fields of one prediction record, or a string saying why it is unusable."""
    out: dict[str, Any] = {}
    if "logprobs" in record:
        lp = record["logprobs"]
        if not isinstance(lp, list) or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in lp):
            return "'logprobs' must be a list of numbers"
        out["logprobs"] = [float(x) for x in lp]
    if "index" in record:
        idx = record["index"]
        if isinstance(idx, bool) or not isinstance(idx, int):
            return f"'index' must be an integer, got {idx!r}"
        out["index"] = idx
    for key in _TEXT_KEYS:
        if key in record:
            if not isinstance(record[key], str):
                return f"{key!r} must be a string, got {type(record[key]).__name__}"
            out["text"] = record[key]
            break
    if not out:
        return f"no prediction field (one of {', '.join(('index', 'logprobs', *_TEXT_KEYS))})"
    for key in ("prompt", "category", "metadata"):
        if key in record:
            out[key] = record[key]
    return out


def _scienceqa_result_file(path: Path, data: dict[str, Any], pset: PredictionSet) -> PredictionSet:
    results, outputs = data.get("results"), data.get("outputs", {})
    if not isinstance(results, dict) or not isinstance(outputs, dict):
        pset.malformed.append(f"{path}: 'results' and 'outputs' must be objects of pid -> value")
        return pset
    for pid, idx in results.items():
        if isinstance(idx, bool) or not isinstance(idx, int):
            pset.malformed.append(f"{path}: results[{pid!r}]: expected an option index, got {idx!r}")
            continue
        pset.records[str(pid)] = {"index": idx}
    for pid, text in outputs.items():
        if not isinstance(text, str):
            pset.malformed.append(f"{path}: outputs[{pid!r}]: expected a string, got {type(text).__name__}")
        elif str(pid) in pset.records:
            pset.records[str(pid)]["text"] = text
        elif str(pid) not in results:
            pset.records[str(pid)] = {"text": text}
    return pset


def _records_of(path: Path) -> tuple[list[tuple[str, Any]], list[str], dict[str, Any] | None]:
    """``(location, object)`` pairs of a JSON list or JSONL file, malformed lines, or a whole JSON object."""
    raw = read_text(path)
    stripped = raw.lstrip()
    if not stripped:
        raise DataError(f"{path}: no predictions (the file is empty)")
    if stripped.startswith("[") or stripped.startswith("{"):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            data = None  # not one JSON document: read it as JSONL below
        if isinstance(data, list):
            return [(f"{path}: record #{i}", r) for i, r in enumerate(data)], [], None
        if isinstance(data, dict) and "results" in data:
            return [], [], data
        if isinstance(data, dict):
            return [(f"{path}:1", data)], [], None
    items, bad = [], []
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append((f"{path}:{lineno}", json.loads(line)))
        except json.JSONDecodeError as e:
            bad.append(f"{path}:{lineno}: malformed JSON line ({e.msg})")
    return items, bad, None


def read_predictions(path: str | os.PathLike[str], key: Callable[[dict[str, Any]], str | None]) -> PredictionSet:
    """Read predictions made elsewhere without ever failing on a bad record.

    Layouts: JSONL (LLaVA answer files ``{"question_id", "prompt", "text", ...}``, scitune's predictions.jsonl
    ``{"id", "text"|"index"|"logprobs"}``), a JSON list of such records, or a ScienceQA result file
    ``{"results": {pid: index}, "outputs": {pid: text}}``. A malformed line, a record without an id or a
    prediction field is listed in ``malformed``; a repeated id is listed in ``duplicates`` (the last one is kept).

    Args:
        path: the file.
        key: record -> example id (None when the record has no usable id).

    Raises:
        DataError: only when the file itself cannot be read.
    """
    path = check_input_file(path, "predictions file")
    pset = PredictionSet()
    items, pset.malformed, result_file = _records_of(path)
    if result_file is not None:
        return _scienceqa_result_file(path, result_file, pset)
    for where, rec in items:
        if not isinstance(rec, dict):
            pset.malformed.append(f"{where}: expected a JSON object, got {type(rec).__name__}")
            continue
        norm = _normalize(rec)
        ident = key(rec)
        if isinstance(norm, str) or ident is None:
            pset.malformed.append(f"{where}: {norm if isinstance(norm, str) else 'no usable id'}")
            continue
        if ident in pset.records:
            pset.duplicates.append(ident)
        pset.records[ident] = norm
    if not pset.records:
        first = f" (e.g. {pset.malformed[0]})" if pset.malformed else ""
        raise DataError(f"{path}: no usable prediction in the file: {len(pset.malformed)} malformed record(s){first}")
    return pset


def resolve_image(name: str, roots: list[Path]) -> str:
    """The first ``root / name`` that exists, else ``roots[0] / name`` (missing images are reported before a run)."""
    for root in roots:
        if (root / name).is_file():
            return str(root / name)
    return str(roots[0] / name)
