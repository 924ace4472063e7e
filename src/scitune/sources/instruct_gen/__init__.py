"""GPT-assisted visual instruction generation (LLaVA, seed 002): a text-only LLM behind an OpenAI-compatible
endpoint turns symbolic context (`scitune.sources.instruct_gen.context`) into a multi-turn conversation, a detailed
description or a complex-reasoning QA, few-shot prompted; finished items are cached so a rerun resumes."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from scitune.io import DataError, read_json, write_json, write_jsonl
from scitune.sources.instruct_gen.context import CONTEXT_KINDS, Context, context_of

log = logging.getLogger(__name__)

__all__ = [
    "LLM_API_KEY_ENV",
    "RESPONSE_TYPES",
    "FewShot",
    "GenerationCache",
    "InstructGenConfig",
    "build_messages",
    "build_record",
    "generate_instructions",
    "load_fewshot",
    "parse_qa",
    "parse_reply",
    "prompt_hash",
]

RESPONSE_TYPES = ("conversation", "detail", "complex")
"""LLaVA's three response types: multi-turn conversation, detailed description, complex reasoning."""
LLM_API_KEY_ENV = "SCITUNE_LLM_API_KEY"
"""Environment variable holding the generator endpoint's API key (sent as a Bearer token; none if unset)."""

_DETAIL_INSTRUCTIONS = {
    "natural": (
        "Describe the image in detail.",
        "Give a detailed description of what this image shows.",
        "What is going on in this picture? Describe it thoroughly.",
        "Walk me through everything you can see in this image.",
        "Write a detailed account of the scene in the image.",
        "Describe the contents of this photo, including the objects and how they are arranged.",
        "Explain in detail what is happening in the image.",
        "Provide a thorough description of the picture.",
    ),
    "figure": (
        "Describe this figure in detail.",
        "Explain what this figure shows, in detail.",
        "Give a detailed description of the figure and what it tells the reader.",
        "Walk me through this figure: what is shown and what does it mean?",
        "Describe the content of this scientific figure thoroughly.",
        "What does this figure present? Describe it in detail.",
    ),
}


# --------------------------------------------------------------------------------------------------------------------
# Prompts (few-shot) and replies
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FewShot:
    """A response type's system prompt and few-shot (context, response) pairs for one context kind."""

    system: str
    examples: tuple[tuple[str, str], ...]
    source: str


def load_fewshot(rtype: str, kind: str, folder: str | os.PathLike[str] | None = None) -> FewShot:
    """Read ``<folder>/<kind>/<rtype>.json`` (``{"system", "examples": [{"context", "response"}]}``; a context is
    a record rendered like the items, or a ready string); the shipped defaults where ``folder`` lacks the file.
    A ``folder`` in LLaVA's released layout (``<folder>/conversation/system_message.txt``, ``000_caps.txt``,
    ``000_conv.txt``, ...; see `llava_prompts`) is read as it is, for every context kind."""
    if rtype not in RESPONSE_TYPES:
        raise ValueError(f"unknown response type {rtype!r}; use {', '.join(RESPONSE_TYPES)}")
    if folder is not None and not Path(folder).is_dir():
        raise DataError(f"--examples {folder}: not a folder (expected <kind>/<type>.json files inside)")
    if folder is not None:  # LLaVA's released prompt folders, as they are
        from scitune.sources.instruct_gen.llava_prompts import llava_prompt_dir, read_llava_prompts

        llava = llava_prompt_dir(folder, rtype)
        if llava is not None:
            system, pairs = read_llava_prompts(llava)
            return FewShot(system, tuple(pairs), str(llava))
    custom = Path(folder) / kind / f"{rtype}.json" if folder is not None else None
    if custom is not None and custom.is_file():
        source, data = str(custom), read_json(custom)
    else:
        ref = resources.files("scitune.sources.instruct_gen") / "examples" / kind / f"{rtype}.json"
        source, data = f"scitune:instruct_gen/examples/{kind}/{rtype}.json", json.loads(ref.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("system"), str):
        raise DataError(f"{source}: expected an object with a 'system' string and an 'examples' list")
    pairs = []
    for i, ex in enumerate(data.get("examples", [])):
        if not isinstance(ex, dict) or not isinstance(ex.get("response"), str):
            raise DataError(f"{source}: example #{i} needs a 'context' and a 'response' string")
        ctx = ex.get("context")
        text = ctx if isinstance(ctx, str) else context_of(ctx, kind, f"{source}: example #{i}").text
        pairs.append((text, ex["response"]))
    return FewShot(data["system"], tuple(pairs), source)


def build_messages(fewshot: FewShot, ctx: Context) -> list[dict[str, str]]:
    """System prompt, the few-shot exchanges as user/assistant turns, then the item's context (LLaVA's layout)."""
    msgs = [{"role": "system", "content": fewshot.system}]
    for context, response in fewshot.examples:
        msgs += [{"role": "user", "content": context}, {"role": "assistant", "content": response}]
    return [*msgs, {"role": "user", "content": ctx.text}]


_REFUSAL = re.compile(
    r"^\W*(i'?m sorry|i am sorry|sorry,|i apologi[sz]e|i can(?:'|no)t|i'?m unable|i am unable|as an ai)", re.IGNORECASE
)
_MARKER = re.compile(r"^[ \t>*#_-]*(question|answer)[ \t*_]*:[ \t*_]*", re.IGNORECASE | re.MULTILINE)
_SEPARATOR = re.compile(r"^[ \t]*(?:={3,}|-{3,})[ \t]*$", re.MULTILINE)


def parse_qa(text: str) -> list[tuple[str, str]]:
    """``Question:`` / ``Answer:`` blocks (``===`` separators, markdown emphasis and a preamble are ignored) as
    (question, answer) pairs.

    Raises:
        ReplyError: no pairs, an empty part, or blocks that do not alternate question, answer, ...
    """
    from scitune.llm_client import ReplyError

    body = _SEPARATOR.sub("", text)
    marks = list(_MARKER.finditer(body))
    if not marks:
        raise ReplyError(f"no 'Question:'/'Answer:' blocks in {text[:60]!r}")
    blocks = []
    for i, m in enumerate(marks):
        content = body[m.end() : marks[i + 1].start() if i + 1 < len(marks) else len(body)].strip()
        role = m.group(1).lower()
        if not content:
            raise ReplyError(f"block {i + 1} ({role}) is empty")
        blocks.append((role, content))
    roles = [r for r, _ in blocks]
    if roles != ["question", "answer"] * (len(blocks) // 2) or len(blocks) % 2:
        raise ReplyError(f"blocks must alternate question, answer, ...; got {', '.join(roles)}")
    return [(blocks[i][1], blocks[i + 1][1]) for i in range(0, len(blocks), 2)]


def parse_reply(rtype: str, text: str) -> list[tuple[str, str]]:
    """The turns of a reply: Q/A pairs (conversation: one or more; complex: exactly one) or, for a detailed
    description, ``[("", description)]`` (the instruction is drawn later).

    Raises:
        ReplyError: a refusal, an empty or malformed reply (the request is then retried).
    """
    from scitune.llm_client import ReplyError

    if not text.strip():
        raise ReplyError("empty reply")
    if _REFUSAL.match(text):
        raise ReplyError(f"refusal: {text.strip()[:80]!r}")
    if rtype == "detail":
        if _MARKER.search(text):
            raise ReplyError("a description was asked for, the reply holds Question/Answer blocks")
        return [("", text.strip())]
    pairs = parse_qa(text)
    if rtype == "complex" and len(pairs) != 1:
        raise ReplyError(f"expected one question and its answer, got {len(pairs)} pairs")
    return pairs


def build_record(ctx: Context, rtype: str, turns: Sequence[tuple[str, str]], model: str, seed: int = 0) -> dict:
    """A canonical record (LLaVA conversation schema): ``<image>\\n`` opens the first human turn when the item has
    an image; a detailed description's instruction is drawn from a fixed list with ``(seed, id)``."""
    if rtype == "detail":
        instruction = random.Random(f"{seed}:{ctx.id}:detail").choice(_DETAIL_INSTRUCTIONS[ctx.kind])
        turns = [(instruction, turns[0][1])]
    conv = []
    for i, (q, a) in enumerate(turns):
        conv.append({"from": "human", "value": f"<image>\n{q}" if i == 0 and ctx.image else q})
        conv.append({"from": "gpt", "value": a})
    meta = {
        "source": "generate-instructions",
        "source_id": ctx.id,
        "response_type": rtype,
        "context_kind": ctx.kind,
        "llm_model": model,
    }
    return {"id": f"{ctx.id}-{rtype}", "image": ctx.image, "conversations": conv, "meta": meta}


# --------------------------------------------------------------------------------------------------------------------
# The run: a thread pool over (item, response type), a resumable cache, a per-item failure report
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class InstructGenConfig:
    """How `generate_instructions` asks the LLM."""

    types: str = ",".join(RESPONSE_TYPES)
    """Response types to generate per item, comma-separated: conversation, detail, complex."""
    kind: str = "auto"
    """Context kind: auto (per record), natural (captions + object boxes) or figure (caption, OCR, mentions, type)."""
    examples: str | None = None
    """Folder of few-shot files <kind>/<type>.json overriding the shipped ones (docs/data.md shows the layout), or
    LLaVA's released playground/data/prompts folder (system_message.txt, NNN_caps.txt, NNN_conv.txt per type)."""
    workers: int = 4
    """Requests in flight at once (threads)."""
    timeout: float = 60.0
    """Seconds allowed for connecting and for each read of a reply."""
    retries: int = 4
    """Further attempts per item after a failure: connection error, timeout, 408/429/5xx, malformed reply, refusal."""
    backoff: float = 1.0
    """Seconds before the first retry, doubled for each next one."""
    temperature: float = 0.7
    """Sampling temperature sent to the LLM."""
    max_tokens: int = 1024
    """Reply length limit sent to the LLM."""
    seed: int = 0
    """Seed of the detailed-description instruction drawn per item."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        wanted = self.type_list()
        bad = [t for t in wanted if t not in RESPONSE_TYPES]
        if bad or not wanted:
            raise ValueError(f"--types: unknown {bad or 'empty'}; choose from {', '.join(RESPONSE_TYPES)}")
        if self.kind not in ("auto", *CONTEXT_KINDS):
            raise ValueError(f"--kind must be auto, natural or figure, got {self.kind!r}")
        if self.workers < 1 or self.retries < 0 or self.timeout <= 0:
            raise ValueError("--workers must be >= 1, --retries >= 0 and --timeout > 0")

    def type_list(self) -> list[str]:
        return list(dict.fromkeys(t.strip() for t in self.types.split(",") if t.strip()))


class GenerationCache:
    """Finished items, one JSON line each, keyed by item id + response type + prompt hash; appended (and synced)
    as items finish, so a killed run loses nothing. A line cut short by a kill is skipped on reading."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.entries: dict[tuple[str, str, str], dict[str, Any]] = {}
        if self.path.is_file():
            for lineno, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
                try:
                    e = json.loads(line)
                    self.entries[(e["id"], e["type"], e["prompt_hash"])] = e
                except (json.JSONDecodeError, KeyError, TypeError):
                    if line.strip():
                        log.warning("%s:%d: unreadable cache line skipped (an interrupted write)", self.path, lineno)

    def get(self, ident: str, rtype: str, prompt_hash: str) -> dict[str, Any] | None:
        return self.entries.get((ident, rtype, prompt_hash))

    def add(self, entry: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.entries[(entry["id"], entry["type"], entry["prompt_hash"])] = entry


def prompt_hash(model: str, messages: list[dict[str, str]], temperature: float, max_tokens: int) -> str:
    """What decides a reply: a changed prompt, example file or model gives a new key (the item is redone)."""
    blob = json.dumps([model, messages, temperature, max_tokens], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def generate_instructions(
    contexts: Sequence[Context],
    client: Any,
    out: str | os.PathLike[str],
    config: InstructGenConfig,
    cache: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Generate every requested response type for every context and write the canonical records.

    Items found in the cache are not asked again. Failures (after the client's retries) never stop the run: they
    are listed per item in the summary, and a rerun asks only for them.

    Args:
        contexts: the items (`load_contexts`).
        client: a `scitune.llm_client.JudgeClient` (any object with ``chat(messages, parse=...)`` and ``model``).
        out: output JSONL of the finished records, in item order then type order (written atomically).
        config: types, kind, workers, ...
        cache: the cache JSONL; default ``<out>`` with suffix ``.cache.jsonl``.

    Returns:
        The summary (also written to ``<out>`` with suffix ``.summary.json``): counts and ``failures`` as
        ``[{"id", "type", "error"}]``.
    """
    from tqdm import tqdm

    from scitune.llm_client import JudgeError

    out = Path(out)
    store = GenerationCache(cache if cache is not None else out.with_suffix(".cache.jsonl"))
    types = config.type_list()
    shots = {(t, k): load_fewshot(t, k, config.examples) for t in types for k in {c.kind for c in contexts}}
    records: dict[tuple[str, str], dict[str, Any]] = {}
    todo = []
    for ctx in contexts:
        for rtype in types:
            messages = build_messages(shots[(rtype, ctx.kind)], ctx)
            key = prompt_hash(client.model, messages, config.temperature, config.max_tokens)
            hit = store.get(ctx.id, rtype, key)
            if hit is not None:
                records[(ctx.id, rtype)] = hit["record"]
            else:
                todo.append((ctx, rtype, key, messages))
    cached = len(records)
    failures: list[dict[str, str]] = []

    def ask(ctx: Context, rtype: str, messages: list[dict[str, str]]) -> tuple[str, dict[str, Any]]:
        parsed: dict[str, Any] = {}

        def parse(reply: str) -> list[tuple[str, str]]:
            parsed["reply"] = reply
            return parse_reply(rtype, reply)

        turns = client.chat(messages, parse=parse)
        return parsed["reply"], build_record(ctx, rtype, turns, client.model, config.seed)

    if todo:
        log.info("%d of %d item(s) x type(s) to generate (%d cached)", len(todo), len(todo) + cached, cached)
    with (
        ThreadPoolExecutor(max_workers=config.workers) as pool,
        tqdm(total=len(todo), desc="generate-instructions", unit="item", disable=not config.progress) as bar,
    ):
        futures = {pool.submit(ask, ctx, rtype, msgs): (ctx, rtype, key) for ctx, rtype, key, msgs in todo}
        for fut in as_completed(futures):
            ctx, rtype, key = futures[fut]
            try:
                reply, record = fut.result()
            except JudgeError as e:
                failures.append({"id": ctx.id, "type": rtype, "error": str(e)})
            else:
                store.add({"id": ctx.id, "type": rtype, "prompt_hash": key, "reply": reply, "record": record})
                records[(ctx.id, rtype)] = record
            bar.update(1)
    ordered = [records[(c.id, t)] for c in contexts for t in types if (c.id, t) in records]
    write_jsonl(out, ordered)
    order = {(c.id, t): i for i, (c, t) in enumerate((c, t) for c in contexts for t in types)}
    failures.sort(key=lambda f: order[(f["id"], f["type"])])
    summary = {
        "out": str(out),
        "cache": str(store.path),
        "items": len(contexts),
        "types": types,
        "written": len(ordered),
        "from_cache": cached,
        "generated": len(ordered) - cached,
        "failed": len(failures),
        "by_type": dict(Counter(r["meta"]["response_type"] for r in ordered)),
        "examples": sorted({s.source for s in shots.values()}),
        "failures": failures,
    }
    write_json(out.with_suffix(".summary.json"), summary)
    return summary
