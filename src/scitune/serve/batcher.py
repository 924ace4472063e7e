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

from scitune.infer.engine import Completion, GenerationEngine, GenerationRequest
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
    stops: list[str] = field(default_factory=list)
    seed: int | None = None
    """Choice i samples with its own generator seeded ``seed + i`` (the same text whatever shares the batch)."""
    stream: bool = False
    deadline: float = math.inf
    """``time.monotonic()`` after which the job fails with a 408."""
    cancelled: bool = False
    """Set when the client went away: the rows stop at the next step and nothing more is sent."""
    events: asyncio.Queue | None = None
    loop: asyncio.AbstractEventLoop | None = None
    rows: list[GenerationRequest] = field(default_factory=list)
    """The engine requests of the ``n`` choices (made by `requests`)."""

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
        self.rows = [
            GenerationRequest(
                self.input_ids,
                self.pixel_values,
                self.image_grids,
                max_new_tokens=self.max_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                stops=list(self.stops),
                seed=None if self.seed is None else self.seed + i,
                deadline=self.deadline,
                on_delta=self._on_delta(i) if self.stream else None,
                on_finish=self._on_finish(i),
                cancelled=self.cancelled,
            )
            for i in range(self.n)
        ]
        return self.rows

    def _on_delta(self, index: int):
        return lambda text: self.emit(Delta(index, text))

    def _on_finish(self, index: int):
        def finish(c: Completion) -> None:
            if c.finish_reason in ("stop", "length"):
                self.emit(Finished(index, c.text, c.finish_reason, c.completion_tokens))
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
