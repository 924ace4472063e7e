"""What goes into the generation engine and what comes out: a `GenerationRequest`, its `Completion`, and the
engine's counters (`EngineStats`)."""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class TokenLogprob:
    """One position's log-probability: the token there, its log-probability under the model's raw distribution (before
    temperature, top-k and top-p), and the ``k`` most likely tokens with theirs (most likely first)."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class Completion:
    """How a request ended: its text, why, and its generated ids.

    ``finish_reason``: ``stop`` (EOS or a stop string), ``length`` (``max_new_tokens``), ``cancelled``, ``timeout``,
    ``error`` (``error`` says what failed), or whatever `GenerationEngine.abort` was given (serve: ``shutdown``).
    """

    text: str
    finish_reason: str
    token_ids: list[int] = field(default_factory=list)
    """Every generated id, the EOS that ended it included."""
    error: str | None = None
    logprobs: list[TokenLogprob] | None = None
    """With ``GenerationRequest.logprobs``: one entry per generated token (an EOS that ended it excluded)."""
    prompt_logprobs: list[TokenLogprob | None] | None = None
    """With ``GenerationRequest.prompt_logprobs``: one entry per prompt token, None for the first (nothing predicts
    it)."""

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class GenerationRequest:
    """One sequence to generate: an encoded prompt, its settings, and where its text goes.

    ``on_delta`` receives the new safe text after each step (the pieces concatenate to the final text); ``on_finish``
    receives the `Completion` once. Both are called from the thread that runs the engine.
    """

    input_ids: list[int] | torch.Tensor
    pixel_values: torch.Tensor | None = None
    """(n_images or n_tiles, C, H, W), in the order of the prompt's image-token runs."""
    image_grids: torch.Tensor | None = None
    """AnyRes: one row per image, as the processor gives them (the model checks and lays out tiles with them)."""
    max_new_tokens: int = 256
    temperature: float = 0.0
    """0 = greedy."""
    top_p: float = 1.0
    top_k: int = 0
    """Sample only among the ``top_k`` most likely tokens (0 = no limit)."""
    stops: list[str] = field(default_factory=list)
    """Stop strings besides the chat template's own."""
    chat: bool = True
    """A chat reply: the template's stop strings end it too and its text is stripped of surrounding whitespace.
    False = a raw text completion: only EOS and ``stops`` end it, and its text is kept as generated."""
    logprobs: int | None = None
    """None = no log-probabilities (nothing computed); k >= 0 = each generated token's, with its k most likely
    alternatives (`Completion.logprobs`; while running, ``token_logprobs`` grows step by step)."""
    prompt_logprobs: int | None = None
    """Like ``logprobs``, for the prompt's own tokens (`Completion.prompt_logprobs`); text-only prompts."""
    seed: int | None = None
    """Seeds this request's own random generator: its samples do not depend on what else is in the batch."""
    deadline: float = math.inf
    """``time.monotonic()`` after which the request ends with ``timeout``."""
    on_delta: Callable[[str], None] | None = None
    on_finish: Callable[[Completion], None] | None = None
    cancelled: bool = False
    """Set by `cancel` (any thread): the request ends at its next step, quietly (no more deltas)."""
    state: str = "new"
    """new -> waiting -> running -> done (set by the engine)."""
    result: Completion | None = None
    submitted_at: float = 0.0
    token_logprobs: list[TokenLogprob] = field(default_factory=list)
    """With ``logprobs``: the entries so far (appended by the engine's thread before it calls ``on_delta``)."""
    prompt_token_logprobs: list[TokenLogprob | None] | None = None
    """With ``prompt_logprobs``: the prompt's entries, set at prefill (before the first ``on_delta``)."""

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class EngineStats:
    """What the engine did: decode steps and the rows in them (the batch size), prefills, and how requests ended."""

    steps: int = 0
    row_steps: int = 0
    """Rows summed over decode steps: ``row_steps / steps`` is the mean batch."""
    prefills: int = 0
    prefill_s: float = 0.0
    """Seconds spent admitting and prefilling."""
    decode_s: float = 0.0
    """Seconds spent in decode steps."""
    requests: int = 0
    """Requests submitted (one per generated sequence)."""
    max_batch_rows: int = 0
    cancelled: int = 0
    timed_out: int = 0
    failed: int = 0
    sizes: Counter = field(default_factory=Counter)
    """Histogram of rows per decode step."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record_step(self, rows: int) -> None:
        with self.lock:
            self.steps += 1
            self.row_steps += rows
            self.max_batch_rows = max(self.max_batch_rows, rows)
            self.sizes[rows] += 1

    def record_end(self, reason: str) -> None:
        with self.lock:
            if reason == "cancelled":
                self.cancelled += 1
            elif reason == "timeout":
                self.timed_out += 1
            elif reason == "error":
                self.failed += 1

    @property
    def mean_batch_rows(self) -> float:
        return self.row_steps / self.steps if self.steps else 0.0

    def as_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "steps": self.steps,
                "row_steps": self.row_steps,
                "mean_batch_rows": round(self.mean_batch_rows, 3),
                "max_batch_rows": self.max_batch_rows,
                "prefills": self.prefills,
                "prefill_s": round(self.prefill_s, 3),
                "decode_s": round(self.decode_s, 3),
                "requests": self.requests,
                "cancelled_rows": self.cancelled,
                "timed_out_rows": self.timed_out,
                "failed_rows": self.failed,
                "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())},
            }
