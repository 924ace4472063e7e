"""Request batching: an asyncio queue of jobs feeding one generation thread, with per-row sampling and stops.

Every row of a batch keeps its own temperature, top_p, max_tokens, stop strings, deadline and cancel flag, so any
requests can share a batch, streamed or not; a row that finishes early stops there while the others go on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from scitune.data.collate import collate
from scitune.model.vlm import VisionLanguageModel
from scitune.processor import Processor
from scitune.serve.schema import ApiError

log = logging.getLogger(__name__)


@dataclass
class Delta:
    """New text of choice ``index`` (streamed jobs only)."""

    index: int
    text: str


@dataclass
class Finished:
    """Choice ``index`` is complete: its whole text, why it ended, how many tokens it took."""

    index: int
    text: str
    finish_reason: str
    completion_tokens: int


@dataclass
class Failed:
    """The job failed (timeout, server error); no further events follow."""

    error: ApiError


@dataclass
class Job:
    """One request, encoded: ``n`` rows share its prompt; events arrive on ``events`` in the server's loop."""

    input_ids: list[int]
    pixel_values: torch.Tensor | None = None
    n: int = 1
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stops: list[str] = field(default_factory=list)
    stream: bool = False
    deadline: float = math.inf
    """``time.monotonic()`` after which the job fails with a 408."""
    cancelled: bool = False
    """Set when the client went away: the rows stop at the next token and nothing more is sent."""
    events: asyncio.Queue | None = None
    loop: asyncio.AbstractEventLoop | None = None

    def emit(self, event: Delta | Finished | Failed) -> None:
        """Hand ``event`` to the job's loop (safe from any thread)."""
        if self.loop is None or self.events is None or self.cancelled:
            return
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is closed: the server is shutting down
            pass

    def cancel(self) -> None:
        self.cancelled = True


def timeout_error() -> ApiError:
    return ApiError(408, "the request took longer than the server's timeout (--timeout_s)", "timeout")


def overloaded_error(what: str) -> ApiError:
    """A 503 asking the client to come back (OpenAI's clients retry it after ``Retry-After``)."""
    return ApiError(
        503,
        f"the server is overloaded ({what}); try again shortly",
        "server_overloaded",
        type="server_error",
        headers={"Retry-After": "1"},
    )


@dataclass
class BatchStats:
    """What the batcher did: batches run, rows and requests in them, and a histogram of batch sizes (rows)."""

    batches: int = 0
    rows: int = 0
    requests: int = 0
    max_batch_rows: int = 0
    cancelled: int = 0
    """Rows stopped early because their client went away."""
    timed_out: int = 0
    """Rows stopped at their request's deadline."""
    sizes: Counter = field(default_factory=Counter)

    def record(self, jobs: list[Job]) -> None:
        n = sum(j.n for j in jobs)
        self.batches += 1
        self.rows += n
        self.requests += len(jobs)
        self.max_batch_rows = max(self.max_batch_rows, n)
        self.sizes[n] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "rows": self.rows,
            "requests": self.requests,
            "max_batch_rows": self.max_batch_rows,
            "cancelled_rows": self.cancelled,
            "timed_out_rows": self.timed_out,
            "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())},
        }


class _Row:
    """One sequence of a batch: decodes its tokens, checks its stops, and streams the safe part of its text."""

    def __init__(self, job: Job, index: int, decode, eos: set[int], stops: list[str], stats: BatchStats):
        self.job, self.index, self.decode, self.eos, self.stats = job, index, decode, eos, stats
        self.stops = [s for s in stops + job.stops if s]
        self.done = False
        self.streamed = ""  # text already sent
        self.text = ""

    def step(self, ids: list[int], now: float) -> bool:
        """Look at the generated ids; return True when this row is done."""
        if self.done:
            return True
        if ids and ids[-1] in self.eos:
            self.text = self._visible(self.decode(ids[:-1]))[0]
            return self._finish("stop", len(ids))
        text, hit = self._visible(self.decode(ids))
        self.text = text
        if hit:
            return self._finish("stop", len(ids))
        if len(ids) >= self.job.max_tokens:
            return self._finish("length", len(ids))
        if self.job.cancelled:
            self.done = True
            self.stats.cancelled += 1
            return True
        if now > self.job.deadline:
            self.done = True
            self.stats.timed_out += 1
            self.job.emit(Failed(timeout_error()))
            return True
        if self.job.stream:
            self._stream(self._safe(text))
        return False

    def _visible(self, text: str) -> tuple[str, bool]:
        cut = min((i for s in self.stops if (i := text.find(s)) >= 0), default=-1)
        return (text[:cut] if cut >= 0 else text).lstrip(), cut >= 0

    def _safe(self, text: str) -> str:
        # hold back what may still change: trailing whitespace (stripped at the end), a partial UTF-8
        # character, and a tail that could be the start of a stop string
        safe, prev = text, None
        while safe != prev:  # until stable: removing a stop prefix can uncover more whitespace
            prev = safe
            safe = safe.rstrip().rstrip("\ufffd")
            for s in self.stops:
                for k in range(min(len(s) - 1, len(safe)), 0, -1):
                    if safe.endswith(s[:k]):
                        safe = safe[:-k]
                        break
        return safe

    def _stream(self, safe: str) -> None:
        if len(safe) > len(self.streamed) and safe.startswith(self.streamed):
            self.job.emit(Delta(self.index, safe[len(self.streamed) :]))
            self.streamed = safe

    def _finish(self, reason: str, n_tokens: int) -> bool:
        self.done = True
        final = self.text.strip()
        if self.job.stream:
            self._stream(final)
        self.job.emit(Finished(self.index, final, reason, n_tokens))
        return True


class _RowStopper(StoppingCriteria):
    """Stopping criterion that asks each row whether it is done (returns a (B,) bool tensor)."""

    def __init__(self, rows: list[_Row]):
        self.rows = rows

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.BoolTensor:
        now = time.monotonic()
        ids = input_ids.tolist()  # (B, T): the generated ids only (the prompt went in as embeddings)
        done = [row.step(row_ids, now) for row, row_ids in zip(self.rows, ids)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _RowSampler(LogitsProcessor):
    """Per-row temperature and top-p; temperature 0 keeps only the argmax (greedy inside a sampled batch)."""

    def __init__(self, temperature: torch.Tensor, top_p: torch.Tensor):
        self.greedy = temperature == 0
        self.temperature = torch.where(self.greedy, torch.ones_like(temperature), temperature)
        self.top_p = top_p
        self.any_top_p = bool((top_p < 1).any())

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        dev = scores.device
        scores = scores / self.temperature.to(dev, scores.dtype)[:, None]  # (B, V)
        if self.any_top_p:  # as transformers' TopPLogitsWarper, with one p per row
            sorted_logits, sorted_idx = torch.sort(scores, descending=False)
            cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            remove = cum <= (1 - self.top_p.to(dev, cum.dtype))[:, None]
            remove[:, -1] = False  # always keep the most likely token
            scores = scores.masked_fill(remove.scatter(1, sorted_idx, remove), -math.inf)
        if bool(self.greedy.any()):
            keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, scores.argmax(-1, keepdim=True), True)
            scores = scores.masked_fill(self.greedy.to(dev)[:, None] & ~keep, -math.inf)
        return scores


class GenerationEngine:
    """Runs one batch of jobs through ``model.generate`` (called from the generation thread only)."""

    def __init__(self, model: VisionLanguageModel, processor: Processor):
        self.model, self.tokenizer = model, processor.tokenizer
        tok = processor.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.eos = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        self.template_stops = processor.stop_strings()
        self.stats = BatchStats()

    def _decode(self, ids: list[int]) -> str:
        # no clean-up of spaces: it can rewrite text already streamed when later tokens arrive
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    @torch.no_grad()
    def run(self, jobs: list[Job]) -> None:
        """Generate every row of ``jobs`` together; results and errors go to each job's events."""
        rows = [_Row(j, i, self._decode, self.eos, self.template_stops, self.stats) for j in jobs for i in range(j.n)]
        items = [{"input_ids": torch.tensor(r.job.input_ids), "pixel_values": r.job.pixel_values} for r in rows]
        batch = collate(items, self.pad_id, padding_side="left")
        dev = self.model.device
        pv = batch["pixel_values"]
        temps = torch.tensor([r.job.temperature for r in rows], dtype=torch.float32)
        top_ps = torch.tensor([r.job.top_p for r in rows], dtype=torch.float32)
        self.model.generate(
            batch["input_ids"].to(dev),
            batch["attention_mask"].to(dev),
            None if pv is None else pv.to(dev),
            max_new_tokens=max(r.job.max_tokens for r in rows),
            do_sample=True,  # _RowSampler makes greedy rows deterministic
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            use_cache=True,
            pad_token_id=self.pad_id,
            eos_token_id=sorted(self.eos) or None,
            logits_processor=LogitsProcessorList([_RowSampler(temps, top_ps)]),
            stopping_criteria=StoppingCriteriaList([_RowStopper(rows)]),
        )
        for r in rows:  # only reached if generate ended without asking the row (cannot happen normally)
            if not r.done:
                r._finish("length", r.job.max_tokens)


class Batcher:
    """Collects jobs for up to ``max_wait_ms`` (or until ``max_batch_size`` rows) and generates them together.

    Args:
        engine: runs a batch (in a dedicated thread, so the event loop keeps serving).
        max_batch_size: most rows per batch; a request is never split, so one with n > max_batch_size runs alone.
        max_wait_ms: how long the first job of a batch waits for company.
        max_queue: most jobs waiting; more get a 503.
    """

    def __init__(
        self, engine: GenerationEngine, max_batch_size: int = 8, max_wait_ms: float = 10.0, max_queue: int = 64
    ):
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.stats = engine.stats
        self._pending: deque[Job] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Start collecting (call inside the server's event loop)."""
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="scitune-generate")
        self._task = asyncio.create_task(self._collect(), name="scitune-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        for job in self._pending:
            job.emit(Failed(ApiError(503, "the server is shutting down", "shutting_down", type="server_error")))
        self._pending.clear()

    def submit(self, job: Job) -> None:
        """Queue ``job``; its events will arrive on ``job.events`` in the running loop."""
        if self._wake is None:
            raise RuntimeError("Batcher.start() was not called")
        if len(self._pending) >= self.max_queue:
            raise overloaded_error(f"{len(self._pending)} requests are queued")
        job.loop = asyncio.get_running_loop()
        job.events = asyncio.Queue()
        self._pending.append(job)
        self._wake.set()

    @property
    def queued(self) -> int:
        """Jobs waiting for a batch (not counting the batch being generated)."""
        return len(self._pending)

    async def _next(self, timeout: float | None) -> bool:
        """Wait until a job is pending (or ``timeout`` passes); True if one is."""
        assert self._wake is not None
        # an Event, not asyncio.Queue.get under wait_for: a timed-out wait must never lose a job
        while not self._pending:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                return False
        return True

    async def _gather(self) -> list[Job]:
        await self._next(None)
        loop = asyncio.get_running_loop()
        batch = [self._pending.popleft()]
        rows = batch[0].n
        until = loop.time() + self.max_wait
        while rows < self.max_batch_size:
            if not self._pending:
                left = until - loop.time()
                if left <= 0 or not await self._next(left):
                    break
            if rows + self._pending[0].n > self.max_batch_size:
                break  # it leads the next batch
            batch.append(self._pending.popleft())
            rows += batch[-1].n
        return batch

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            now = time.monotonic()
            live = []
            for job in batch:
                if job.cancelled:  # its client left while it waited
                    self.stats.cancelled += job.n
                    continue
                if now > job.deadline:
                    self.stats.timed_out += job.n
                    job.emit(Failed(timeout_error()))
                    continue
                live.append(job)
            if not live:
                continue
            self.stats.record(live)
            try:
                await loop.run_in_executor(self._executor, self.engine.run, live)
            except Exception as e:  # a bug or an out-of-memory: fail this batch, keep serving
                log.exception("generation failed for a batch of %d request(s)", len(live))
                err = ApiError(500, f"generation failed: {type(e).__name__}", "server_error", type="server_error")
                for job in live:
                    job.emit(Failed(err))
