"""The eval runner: get predictions (run a model, appending each answer to ``predictions.jsonl`` so that an
interrupted eval resumes, or read a file made elsewhere), score them, and write ``results.json``, ``report.md`` and
the plots into the output folder."""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, NamedTuple

from scitune.eval.benchmark import Benchmark, Example, PredictionSet, ScoreContext
from scitune.eval.harness_format import harness_keys, sample_file, sample_records, sample_values, task_hash
from scitune.eval.report import md_table
from scitune.io import DataError, read_json, write_json, write_jsonl, write_text
from scitune.outputs import claim_output_folder

log = logging.getLogger(__name__)

__all__ = ["FollowUp", "PredictionLog", "input_stats", "run_benchmark", "write_outputs"]

Records = dict[str, dict[str, Any]]
PREDICTIONS_FILE = "predictions.jsonl"
RUN_FILE = "run.json"
# options that do not change the predictions: a resumed run may change them
_VOLATILE = ("out", "batch_size", "device", "progress", "limit", "predictions", "overwrite", "log_samples")
EVAL_WRITES = (PREDICTIONS_FILE, RUN_FILE, "results.json", "report.md", "*.png", "*.jsonl", "*.json", "base")
"""What an eval run writes at the top of its folder (``base``: the --compare_base run; ``*.jsonl`` includes
--log_samples's ``samples_<task>.jsonl``)."""


class PredictionLog:
    """``predictions.jsonl`` of a model run: what is already there (resume) and an append-as-you-go writer.

    A line cut short by a kill is dropped when the log is opened (the file is rewritten atomically without it).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, dict[str, Any]] = {}
        bad = 0
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    rec = None
                if isinstance(rec, dict) and isinstance(rec.get("id"), str):
                    self.done[rec["id"]] = {k: v for k, v in rec.items() if k != "id"}
                else:
                    bad += bool(line.strip())
        if bad:
            log.warning("%s: dropping %d unreadable line(s) (an interrupted write)", path, bad)
            write_jsonl(path, ({"id": k, **v} for k, v in self.done.items()))
        self._file: Any = None

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append records (each with ``id``) and make them durable before returning."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open across batches)
        for rec in records:
            self._file.write(json.dumps(rec, ensure_ascii=False) + "\n")
            self.done[rec["id"]] = {k: v for k, v in rec.items() if k != "id"}
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _check_run_file(out: Path, bench: Benchmark, source: str) -> None:
    """Refuse to resume predictions that were made by another model or with other options."""
    opts = {k: v for k, v in asdict(bench.opts).items() if k not in _VOLATILE}
    wanted = {"benchmark": bench.name, "source": source, "options": opts}
    path = out / RUN_FILE
    if path.is_file() and (out / PREDICTIONS_FILE).is_file():
        old = read_json(path)
        if old != json.loads(json.dumps(wanted)):
            raise DataError(
                f"{out}: holds predictions of another run ({path}); choose another --out or delete the folder to "
                "start over"
            )
    write_json(path, wanted)


def _check_images(todo: list[Example]) -> None:
    missing = list(dict.fromkeys(p for e in todo for p in e.images if not Path(p).is_file()))
    if missing:
        raise DataError(f"{len(missing)} image(s) not found, e.g. {', '.join(missing[:3])} (see --image_root)")


class FollowUp(NamedTuple):
    """A second generation pass for one example (a benchmark's ``follow_up``), e.g. ScienceQA's answer prompter.

    The recorded ``text`` becomes ``prefix`` + the second pass's text; the first pass's text is kept as
    ``first_text``.
    """

    messages: list[Any]
    """The second prompt's messages (`scitune.data.conversation.Message`); ending with an assistant turn continues
    the first prompt (`scitune.data.templates.ChatTemplate.render_prompt`). The images stay those of the first."""
    max_new_tokens: int
    prefix: str


def _batch_seed(seed: int, first_id: str) -> int:
    """Sampling seed of a batch: from ``--seed`` and the batch's first example, so a rerun with the same batches
    draws the same answers."""
    return (seed * 1_000_003 + zlib.crc32(first_id.encode("utf-8"))) % 2**63


def _generate(bench: Benchmark, loaded: Any, todo: list[Example], plog: PredictionLog) -> None:
    import torch
    from tqdm import tqdm

    from scitune.config.schema import GenerationConfig
    from scitune.infer.generate import Generator, Prompt, open_image
    from scitune.loader import with_template

    processor = loaded.processor  # loaded: a scitune.loader.Loaded
    if getattr(bench.opts, "template", None):  # prompts in another template than the checkpoint's
        processor = with_template(processor, bench.opts.template)
    gen = Generator(loaded.model, processor)
    temperature = float(getattr(bench.opts, "temperature", 0.0))  # benchmarks without the option decode greedily
    seed = int(getattr(bench.opts, "seed", 0))
    cfg = GenerationConfig(max_new_tokens=bench.opts.max_new_tokens, temperature=temperature)
    follow_up = getattr(bench, "follow_up", None)
    bs = max(1, bench.opts.batch_size)
    with tqdm(total=len(todo), desc=f"{bench.name}: generate", unit="ex", disable=not bench.opts.progress) as bar:
        for start in range(0, len(todo), bs):
            batch = todo[start : start + bs]
            if temperature > 0:
                torch.manual_seed(_batch_seed(seed, batch[0].id))
            prompts = [Prompt.single(bench.prompt_text(e), [open_image(p) for p in e.images]) for e in batch]
            texts = gen.generate(prompts, cfg)
            records = [{"id": e.id, "text": t, "prompt": bench.prompt_text(e)} for e, t in zip(batch, texts)]
            if follow_up is not None:
                _second_pass(gen, cfg, follow_up, batch, prompts, records)
            plog.append(records)
            bar.update(len(batch))


def _second_pass(
    gen: Any, cfg: Any, follow_up: Any, batch: list[Example], prompts: list[Any], records: list[dict]
) -> None:
    """Generate the benchmark's follow-up prompts (one call per length limit) and update the records' texts."""
    from scitune.infer.generate import Prompt

    ups = []
    for e, p, r in zip(batch, prompts, records):
        f = follow_up(e, p.messages, r["text"])
        if f is not None:
            ups.append((r, f, p.images))
    for n in sorted({f.max_new_tokens for _, f, _ in ups}):
        group = [u for u in ups if u[1].max_new_tokens == n]
        texts = gen.generate([Prompt(f.messages, images) for _, f, images in group], replace(cfg, max_new_tokens=n))
        for (r, f, _), t in zip(group, texts):
            r["first_text"], r["text"] = r["text"], f.prefix + t


def _loglik(bench: Benchmark, llm: Any, tokenizer: Any, todo: list[Example], plog: PredictionLog) -> None:
    from tqdm import tqdm

    from scitune.eval.loglik import continuation_logprobs

    bs = max(1, bench.opts.batch_size)
    chunk = max(1, bs * 4 // max(1, max((len(e.choices) for e in todo), default=1)))  # examples per append
    with tqdm(total=len(todo), desc=f"{bench.name}: log-likelihood", unit="ex", disable=not bench.opts.progress) as bar:
        for start in range(0, len(todo), chunk):
            batch = todo[start : start + chunk]
            pairs = [(e.text, c) for e in batch for c in e.choices]
            scores = continuation_logprobs(llm, tokenizer, pairs, bs)
            records, at = [], 0
            for e in batch:
                records.append({"id": e.id, "logprobs": scores[at : at + len(e.choices)]})
                at += len(e.choices)
            plog.append(records)
            bar.update(len(batch))


def _text_model(bench: Benchmark) -> Any:
    """How a text-only benchmark runs the LLM: its class's ``predict_text(bench, llm, tokenizer, todo, plog)`` (e.g.
    truthfulqa-gen's raw-text generation, mode ``complete``), else the log-likelihoods of its choices."""
    return getattr(type(bench), "predict_text", None) or _loglik


def input_stats(bench: Benchmark, examples: list[Example], pset: PredictionSet) -> dict[str, Any]:
    """Counts (and first ids) of the predictions' problems; drops unusable records from ``pset`` in place.

    Unknown ids are predictions for no example; missing ids are examples without a prediction (scored wrong);
    malformed lines, duplicates and empty generations are counted too; a log-likelihood record whose number of
    scores differs from the example's choices is malformed.
    """
    by_id = {e.id: e for e in examples}
    unknown = [k for k in pset.records if k not in by_id]
    for k in unknown:
        del pset.records[k]
    if bench.mode == "loglik":
        for k, rec in list(pset.records.items()):
            if len(rec.get("logprobs", [])) != len(by_id[k].choices):
                pset.malformed.append(
                    f"id {k!r}: {len(rec.get('logprobs', []))} scores for {len(by_id[k].choices)} choices"
                )
                del pset.records[k]
    missing = [e.id for e in examples if e.id not in pset.records]
    empty = [
        k
        for k, r in pset.records.items()
        if "index" not in r and "logprobs" not in r and not str(r.get("text", "")).strip()
    ]
    return {
        "examples": len(examples),
        "predictions": len(pset.records),
        "missing": len(missing),
        "unknown_ids": len(unknown),
        "malformed": len(pset.malformed),
        "duplicates": len(pset.duplicates),
        "empty": len(empty),
        "first": {
            "missing": missing[:10],
            "unknown_ids": unknown[:10],
            "malformed": pset.malformed[:10],
            "duplicates": pset.duplicates[:10],
            "empty": empty[:10],
        },
    }


def _score(bench: Benchmark, examples: list[Example], pset: PredictionSet, out: Path) -> dict[str, Any]:
    stats = input_stats(bench, examples, pset)
    if stats["missing"]:
        shown = ", ".join(stats["first"]["missing"][:5])
        log.warning(
            "%d of %d questions have no prediction (scored wrong), e.g. %s", stats["missing"], stats["examples"], shown
        )
    if stats["malformed"]:
        log.warning(
            "%d prediction record(s) ignored as malformed, e.g. %s", stats["malformed"], stats["first"]["malformed"][0]
        )
    results = bench.score(examples, pset.records, ScoreContext(out, bench.opts.progress))
    return {**results, "input": stats}


def _model_predictions(bench: Benchmark, examples: list[Example], out: Path, source: str, runner: Any) -> PredictionSet:
    """Resume ``out/predictions.jsonl`` and let ``runner(todo, plog)`` predict the examples not done yet."""
    _check_run_file(out, bench, source)
    plog = PredictionLog(out / PREDICTIONS_FILE)
    todo = [e for e in examples if e.id not in plog.done]
    if len(todo) < len(examples):
        log.info("%s: resuming, %d of %d examples already predicted", out, len(examples) - len(todo), len(examples))
    try:
        if todo:
            runner(todo, plog)
    finally:
        plog.close()
    wanted = {e.id for e in examples}  # a resumed log may hold more (an earlier run without --limit)
    return PredictionSet(records={k: v for k, v in plog.done.items() if k in wanted})


def _load_llm(path: str, dtype: str | None, device: str) -> tuple[Any, Any]:
    from transformers import AutoTokenizer

    from scitune.model.llm import load_llm

    llm = load_llm(path, dtype or "float32").to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    return llm, tokenizer


def _base_llm(checkpoint: str) -> tuple[str, str]:
    """The base LLM recorded in a checkpoint's scitune.json: ``(path, dtype)``."""
    from scitune.model.checkpoint import read_meta

    llm = read_meta(checkpoint).get("llm", {})
    if not llm.get("path"):
        raise DataError(f"{checkpoint}: scitune.json records no base LLM path (llm.path); --compare_base needs it")
    return str(llm["path"]), str(llm.get("dtype") or "float32")


def _model_run(bench: Benchmark, examples: list[Example], out: Path, which: str) -> tuple[dict[str, Any], Records]:
    """Run the checkpoint (``which="checkpoint"``), ``--llm`` (``"llm"``) or the checkpoint's base LLM (``"base"``);
    return the results and the prediction records they scored."""
    opts, device = bench.opts, _device(bench.opts.device)
    if bench.mode == "generate":
        from scitune.loader import load

        _check_images(examples)
        model = None

        def runner(todo: list[Example], plog: PredictionLog) -> None:
            nonlocal model
            model = model or load(opts.checkpoint, device=device, dtype=opts.dtype)
            _generate(bench, model, todo, plog)

        source = f"checkpoint:{Path(opts.checkpoint).resolve()}"
    else:
        path, dtype = _base_llm(opts.checkpoint) if which == "base" else (opts.llm, "float32")

        def runner(todo: list[Example], plog: PredictionLog) -> None:
            if path is None:
                from scitune.loader import load

                vlm, processor = load(opts.checkpoint, device=device, dtype=opts.dtype)
                _text_model(bench)(bench, vlm.llm, processor.tokenizer, todo, plog)
            else:
                _text_model(bench)(bench, *_load_llm(path, opts.dtype or dtype, device), todo, plog)

        source = f"{which}:{path or Path(opts.checkpoint).resolve()}"
    pset = _model_predictions(bench, examples, out, source, runner)
    results = _score(bench, examples, pset, out)
    results["source"] = source
    return results, pset.records


def _compare(bench: Benchmark, ckpt: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    keys = [k for k in ckpt["summary"] if isinstance(ckpt["summary"][k], int | float)]
    diff = {
        k: (ckpt["summary"][k] - base["summary"][k]) if isinstance(base["summary"].get(k), int | float) else None
        for k in keys
    }
    return {"summary": dict(ckpt["summary"]), "checkpoint": ckpt, "base": base, "difference": diff}


def _compare_report(bench: Benchmark, results: dict[str, Any]) -> str:
    ckpt, base, diff = results["checkpoint"], results["base"], results["difference"]
    rows = [[k, ckpt["summary"][k], base["summary"].get(k), diff[k]] for k in diff]
    return (
        f"Checkpoint LLM vs its base LLM (`{base['source']}`), same prompts and scoring:\n\n"
        + md_table(["metric", "checkpoint", "base", "difference"], rows)
        + "\n## Checkpoint\n\n"
        + bench.report(ckpt)
        + "\n## Base LLM\n\n"
        + bench.report(base)
    )


def _inputs_section(stats: dict[str, Any]) -> str:
    lines = [
        f"- examples: {stats['examples']}; predictions used: {stats['predictions']}",
        f"- missing predictions (scored wrong): {stats['missing']}",
        f"- predictions for unknown ids (ignored): {stats['unknown_ids']}",
        f"- malformed lines/records (ignored): {stats['malformed']}",
        f"- duplicate ids (last kept): {stats['duplicates']}",
        f"- empty generations (scored wrong): {stats['empty']}",
    ]
    for key, items in stats["first"].items():
        if items:
            lines.append(f"- first {key}: " + ", ".join(f"`{x}`" for x in items[:5]))
    return "\n".join(lines) + "\n"


def write_outputs(bench: Benchmark, results: dict[str, Any], out: Path) -> None:
    """Write ``results.json``, the plots and ``report.md`` (atomically) into ``out``."""
    compared = "checkpoint" in results and "base" in results
    main = results["checkpoint"] if compared else results
    plots = bench.plots(main, out)
    if compared:
        from scitune.eval.plots import bar_chart

        keys = list(results["difference"])
        series = {w: [results[w]["summary"].get(k) for k in keys] for w in ("checkpoint", "base")}
        bar_chart(out / "compare_base.png", keys, series, title=f"{bench.name}: checkpoint vs base LLM")
        plots = ["compare_base.png", *plots]
    results["plots"] = plots
    write_json(out / "results.json", results)
    body = _compare_report(bench, results) if compared else bench.report(results)
    text = (
        f"# {bench.name}\n\n- data: `{bench.opts.data}`\n- predictions from: `{main.get('source')}`\n\n"
        f"## Inputs\n\n{_inputs_section(main['input'])}\n## Results\n\n{body}\n"
        + "".join(f"![{Path(p).stem}]({p})\n\n" for p in plots)
    )
    write_text(out / "report.md", text)


def run_benchmark(bench: Benchmark) -> dict[str, Any]:
    """Evaluate per ``bench.opts``: score ``--predictions``, or run ``--checkpoint`` / ``--llm`` (resuming), and
    with ``--compare_base`` (log-likelihood benchmarks) also the checkpoint's base LLM; write the outputs.

    Returns:
        The results (as written to results.json).
    """
    from scitune.extras import require

    opts = bench.opts
    require(f"eval {bench.name}", *bench.requires)
    sources = [s for s in ("checkpoint", "llm", "predictions") if getattr(opts, s)]
    if len(sources) != 1:
        raise ValueError("give exactly one of --checkpoint, --llm, --predictions")
    if opts.llm and bench.mode == "generate":
        raise ValueError(f"--llm is for text-only benchmarks; {bench.name} needs --checkpoint or --predictions")
    compare = bool(getattr(opts, "compare_base", False))
    if compare and not opts.checkpoint:
        raise ValueError("--compare_base needs --checkpoint (its scitune.json names the base LLM)")
    if opts.out is None and not opts.checkpoint:
        raise ValueError("--out is required with --predictions and --llm")
    out = Path(opts.out) if opts.out else Path(opts.checkpoint) / "eval" / bench.name
    started = time.time()
    examples = bench.examples()
    claim_output_folder(out, "eval", EVAL_WRITES, opts.overwrite)
    n_original = len(examples)
    if opts.limit is not None:
        examples = examples[: opts.limit]
    if not examples:
        raise DataError(f"{opts.data}: no {bench.name} examples found")
    if opts.predictions:
        pset = bench.read_predictions(opts.predictions, examples)
        results = _score(bench, examples, pset, out)
        results["source"] = f"predictions:{Path(opts.predictions).resolve()}"
        tasks = [(bench.name, results, pset.records)]
    elif compare:
        ckpt, ckpt_records = _model_run(bench, examples, out, "checkpoint")
        base, base_records = _model_run(bench, examples, out / "base", "base")
        results = _compare(bench, ckpt, base)
        tasks = [(bench.name, ckpt, ckpt_records), (f"{bench.name}-base", base, base_records)]
    else:
        results, records = _model_run(bench, examples, out, "llm" if opts.llm else "checkpoint")
        tasks = [(bench.name, results, records)]
    results = {"benchmark": bench.name, "out": str(out), "options": asdict(opts), **results}
    _add_harness_keys(bench, results, _harness_tasks(bench, examples, tasks, out), n_original, started)
    write_outputs(bench, results, out)
    return results


def _harness_tasks(
    bench: Benchmark, examples: list[Example], tasks: list[tuple[str, dict[str, Any], Records]], out: Path
) -> list[tuple[str, dict[str, Any], dict[str, list[float]], str | None]]:
    """Per task: its per-example values and, with ``--log_samples``, its ``samples_<task>.jsonl`` (written here)."""
    done = []
    for task, res, records in tasks:
        per_sample = sample_values(bench, examples, records, res)
        digest = None
        if getattr(bench.opts, "log_samples", False):
            samples = sample_records(bench, examples, records, per_sample)
            write_jsonl(out / sample_file(task), samples)
            digest = task_hash(samples)
        done.append((task, res, per_sample, digest))
    return done


def _add_harness_keys(
    bench: Benchmark, results: dict[str, Any], tasks: list[Any], n_original: int, started: float
) -> None:
    """Add lm-evaluation-harness's top-level keys (`scitune.eval.harness_format`); a benchmark's own key of the
    same name is kept (and the harness's dropped, with a warning)."""
    n = results.get("input", results.get("checkpoint", {}).get("input", {})).get("examples", 0)
    entries = [(task, res, per_sample, n) for task, res, per_sample, _ in tasks]
    hashes = {task: digest for task, _, _, digest in tasks if digest is not None}
    for key, value in harness_keys(bench, entries, n_original, started, hashes).items():
        if key in results:
            log.warning("%s: results.json key %r is the benchmark's own; lm-eval's is left out", bench.name, key)
            continue
        results[key] = value
