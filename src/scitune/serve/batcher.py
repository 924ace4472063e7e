"""Request queueing for the server: jobs go to the infer engine (`scitune.infer.engine.GenerationEngine`), which one
generation thread runs; the engine's callbacks come back to the server's event loop as `Delta`/`Finished`/`Failed`.

Batching, sampling, stops and streaming all live in the engine; this module only turns a request's ``n`` choices
into engine requests, counts what waits (for the 503), and starts and stops the thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from scitune.infer.engine import Completion, GenerationEngine, GenerationRequest, TokenLogprob
from scitune.serve.schema import ApiError

log = logging.getLogger(__name__)


@dataclass
class Delta:
    """New text of choice ``index`` (streamed jobs only), with the entries of the tokens generated since the last
    delta when the job asked for log-probabilities."""

    index: int
    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob | None] | None = None
    """The prompt's entries, on a choice's first delta (when the job asked for them)."""


@dataclass
class Finished:
    """Choice ``index`` is complete: its whole text, why it ended, how many tokens it took (and, when asked, the
    entries of its tokens and of its prompt's)."""

    index: int
    text: str
    finish_reason: str
    completion_tokens: int
    logprobs: list[TokenLogprob] | None = None
    prompt_logprobs: list[TokenLogprob | None] | None = None


@dataclass
class Failed:
    """The job failed (timeout, server error); no further events follow."""

    error: ApiError


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


def shutdown_error() -> ApiError:
    return ApiError(503, "the server is shutting down", "shutting_down", type="server_error")


@dataclass
class Job:
    """One request, encoded: ``n`` choices share its prompt; events arrive on ``events`` in the server's loop."""

    input_ids: list[int]
    pixel_values: torch.Tensor | None = None
    image_grids: torch.Tensor | None = None
    n: int = 1
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stops: list[str] = field(default_factory=list)
    seed: int | None = None
    """Choice i samples with its own generator seeded ``seed + i`` (the same text whatever shares the batch)."""
    more_prompts: list[list[int]] = field(default_factory=list)
    """Further text-only prompts (``/v1/completions`` with a list): prompt p's choice i has index ``p * n + i``
    (``input_ids`` is prompt 0), and seed ``seed + i`` whatever its place in the list."""
    chat: bool = True
    """A chat reply (template stops, stripped text); False = a raw completion (see `GenerationRequest.chat`)."""
    logprobs: int | None = None
    """Log-probabilities of the generated tokens with this many alternatives (None = none)."""
    prompt_logprobs: int | None = None
    """The same for the prompt's tokens (``echo`` with ``logprobs``)."""
    stream: bool = False
    deadline: float = math.inf
    """``time.monotonic()`` after which the job fails with a 408."""
    cancelled: bool = False
    """Set when the client went away: the rows stop at the next step and nothing more is sent."""
    events: asyncio.Queue | None = None
    loop: asyncio.AbstractEventLoop | None = None
    rows: list[GenerationRequest] = field(default_factory=list)
    """The engine requests of the ``n`` choices (made by `requests`)."""

    @property
    def choices(self) -> int:
        """Choices in all: ``n`` per prompt."""
        return self.n * (1 + len(self.more_prompts))

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
        for r in self.rows:
            r.cancel()

    def requests(self) -> list[GenerationRequest]:
        """One engine request per choice, whose callbacks emit this job's events."""
        self.rows = []
        for p, ids in enumerate([self.input_ids, *self.more_prompts]):
            for i in range(self.n):
                row = GenerationRequest(
                    ids,
                    self.pixel_values if p == 0 else None,
                    self.image_grids if p == 0 else None,
                    max_new_tokens=self.max_tokens,
                    temperature=self.temperature,
                    top_p=self.top_p,
                    top_k=self.top_k,
                    stops=list(self.stops),
                    chat=self.chat,
                    logprobs=self.logprobs,
                    prompt_logprobs=self.prompt_logprobs,
                    seed=None if self.seed is None else self.seed + i,
                    deadline=self.deadline,
                    cancelled=self.cancelled,
                )
                row.on_delta = self._on_delta(p * self.n + i, row) if self.stream else None
                row.on_finish = self._on_finish(p * self.n + i)
                self.rows.append(row)
        return self.rows

    def _on_delta(self, index: int, row: GenerationRequest):
        sent, deltas = 0, 0  # entries of row.token_logprobs already in a delta; deltas so far

        def delta(text: str) -> None:
            # the engine's thread appends this step's entry, then calls this: no lock needed
            nonlocal sent, deltas
            new = row.token_logprobs[sent:]
            sent, deltas = sent + len(new), deltas + 1
            self.emit(Delta(index, text, new, row.prompt_token_logprobs if deltas == 1 else None))

        return delta

    def _on_finish(self, index: int):
        def finish(c: Completion) -> None:
            if c.finish_reason in ("stop", "length"):
                self.emit(Finished(index, c.text, c.finish_reason, c.completion_tokens, c.logprobs, c.prompt_logprobs))
            elif c.finish_reason == "timeout":
                self.emit(Failed(timeout_error()))
            elif c.finish_reason == "shutdown":
                self.emit(Failed(shutdown_error()))
            elif c.finish_reason == "error":
                log.error("generation failed for a request: %s", c.error)
                kind = (c.error or "error").split(":")[0]
                self.emit(Failed(ApiError(500, f"generation failed: {kind}", "server_error", type="server_error")))
            # cancelled: the client is gone, nothing to send

        return finish


class Batcher:
    """Queues jobs for the engine and runs the engine in one dedicated generation thread.

    Args:
        engine: the infer engine (its ``max_batch_size``, ``admission`` and ``max_wait_s`` set the batching).
        max_queue: most jobs waiting to be admitted; more get a 503.
    """

    def __init__(self, engine: GenerationEngine, max_queue: int = 64):
        self.engine = engine
        self.max_queue = max_queue
        self.stats = engine.stats
        self._jobs: deque[Job] = deque()  # submitted, oldest first, until all their rows are admitted
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        """Start the generation thread (call inside the server's event loop)."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.engine.serve_forever, args=(self._stop,), name="scitune-generate", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        """Stop after the current step; what is left fails with a 503."""
        self._stop.set()
        self.engine.wake()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        self.engine.abort("shutdown")
        self._jobs.clear()

    def submit(self, job: Job) -> None:
        """Queue ``job``; its events will arrive on ``job.events`` in the running loop."""
        if self._thread is None:
            raise RuntimeError("Batcher.start() was not called")
        if self.queued >= self.max_queue:
            raise overloaded_error(f"{self.queued} requests are queued")
        job.loop = asyncio.get_running_loop()
        job.events = asyncio.Queue()
        rows = job.requests()
        self._jobs.append(job)
        self.engine.submit(*rows)

    @property
    def queued(self) -> int:
        """Jobs with a choice not yet admitted into the running batch."""
        while self._jobs and all(r.state in ("running", "done") for r in self._jobs[0].rows):
            self._jobs.popleft()  # the engine admits in order: once the oldest is in, count from the next
        return len(self._jobs)

    def health(self) -> dict[str, Any]:
        """The engine's counters and batching settings (for /health)."""
        e = self.engine
        settings = {"admission": e.admission, "max_batch_size": e.max_batch_size, "running_rows": e.running}
        return settings | self.stats.as_dict()
