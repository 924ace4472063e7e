"""The one generation engine: batched, KV-cached decoding with per-request sampling, stops and streaming, and
continuous batching. `generate`, `chat` and eval use it through `scitune.infer.generate`; `serve` runs
`GenerationEngine.serve_forever` in its generation thread."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from scitune.data.collate import collate
from scitune.infer.kv import KVCacheAdapter, pad_left
from scitune.infer.logprobs import token_logprobs
from scitune.infer.requests import Completion, EngineStats, GenerationRequest, TokenLogprob
from scitune.infer.sampling import choose
from scitune.infer.stream import TextStream, text_decoder
from scitune.model.vlm import VisionLanguageModel
from scitune.processor import Processor

log = logging.getLogger(__name__)

__all__ = ["ADMISSIONS", "Completion", "EngineStats", "GenerationEngine", "GenerationRequest", "TokenLogprob"]

ADMISSIONS = ("continuous", "static")
"""continuous: a request joins the running batch at the next decode step; static: requests are admitted only into an
empty batch, which then runs until all of its rows are done (the baseline the serve benchmark compares against)."""


class _Sequence:
    """A running request: its generated ids (the last one not yet fed to the model), text and random generator."""

    def __init__(self, request: GenerationRequest, stream: TextStream, limit: int, generator: torch.Generator | None):
        self.request, self.stream, self.limit, self.generator = request, stream, limit, generator
        self.ids: list[int] = []


@dataclass
class _Batch:
    """The running rows: left-padded to one length L, ``mask`` (B, L) marks real positions.

    ``past`` is the KV cache (B rows, L positions), or without a cache the input embeddings (B, L, D).
    """

    seqs: list[_Sequence]
    mask: torch.Tensor
    past: Any
    _params: tuple | None = None

    def params(self) -> tuple[torch.Tensor, torch.Tensor, list[torch.Generator | None], torch.Tensor]:
        """Per-row temperature (B,), top-p (B,), generators and top-k (B,), rebuilt when the rows change (the
        arguments of `choose` after the logits)."""
        if self._params is None:
            reqs = [s.request for s in self.seqs]
            self._params = (
                torch.tensor([r.temperature for r in reqs], dtype=torch.float32),
                torch.tensor([r.top_p for r in reqs], dtype=torch.float32),
                [s.generator for s in self.seqs],
                torch.tensor([r.top_k for r in reqs], dtype=torch.long),
            )
        return self._params


PADDING_LIMIT = 0.1
"""The most of a prefill group's positions that may be padding (see `prefill_groups`)."""


def prefill_groups(requests: list[GenerationRequest], limit: float = PADDING_LIMIT) -> list[list[GenerationRequest]]:
    """Requests admitted together, in groups of similar prompt length (shortest first) that are prefilled one after
    another: a group grows while at most ``limit`` of its left-padded positions are padding, so that one long prompt
    does not make every short one compute its length in padding."""
    groups: list[list[GenerationRequest]] = []
    group: list[GenerationRequest] = []
    total = 0
    for r in sorted(requests, key=lambda r: len(r.input_ids)):
        n = len(r.input_ids)
        if group and (len(group) + 1) * n - (total + n) > limit * (len(group) + 1) * n:
            groups.append(group)
            group, total = [], 0
        group.append(r)
        total += n
    return groups + [group] if group else groups


class GenerationEngine:
    """Generates many requests together, one token per row per step, admitting and retiring rows between steps.

    A step first admits waiting requests (as the admission policy allows) and runs their prompts through the LLM,
    prompts of similar length together (`prefill_groups`; left-padded, image features spliced in by ``model.embed``),
    each row with its own position ids; their KV
    cache is then merged into the running batch's: both are left-padded with zeros to a common length and
    concatenated, and the attention mask marks the padding. Then every row is fed its last token (position = its own
    count of real tokens) and gets its next one. Rows that finish leave the cache at once, and columns that only
    padding is left in are trimmed. `scitune.infer.kv.KVCacheAdapter` is the only code that touches the cache.

    Args:
        model: the vision-language model (its LLM is any HF causal LM).
        processor: its processor (tokenizer, EOS, the template's stop strings).
        max_batch_size: most rows decoded together (0 = no limit).
        admission: ``continuous`` or ``static`` (see `ADMISSIONS`).
        max_wait_s: in `serve_forever`, how long the first request of an empty batch waits for company.
        use_cache: False recomputes every position each step (a check on the cache, never faster).
    """

    def __init__(
        self,
        model: VisionLanguageModel,
        processor: Processor,
        max_batch_size: int = 8,
        admission: str = "continuous",
        max_wait_s: float = 0.0,
        use_cache: bool = True,
    ):
        if admission not in ADMISSIONS:
            raise ValueError(f"admission must be one of {', '.join(ADMISSIONS)}, not {admission!r}")
        self.model, self.tokenizer = model, processor.tokenizer
        self._decode_ids = text_decoder(processor.tokenizer)
        tok = processor.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        self.eos = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        self.template_stops = processor.stop_strings()
        self.max_batch_size = max_batch_size
        self.admission = admission
        self.max_wait_s = max_wait_s
        self.use_cache = use_cache
        self.kv = KVCacheAdapter(model.llm)
        self.stats = EngineStats()
        self._cond = threading.Condition()
        self._waiting: deque[GenerationRequest] = deque()
        self._batch: _Batch | None = None

    # ---- public API
    def submit(self, *requests: GenerationRequest) -> None:
        """Queue requests (any thread); they join at a later step."""
        for r in requests:
            if r.prompt_logprobs is not None and r.pixel_values is not None:
                raise ValueError("prompt log-probabilities need a text-only prompt (no images)")
        now = time.monotonic()
        with self._cond:
            for r in requests:
                r.state, r.submitted_at = "waiting", now
                self._waiting.append(r)
            self.stats.requests += len(requests)
            self._cond.notify_all()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        b = self._batch
        return 0 if b is None else len(b.seqs)

    @torch.no_grad()
    def step(self) -> bool:
        """Admit what the policy allows (one prefill), then decode one token for every row; False if idle.

        An error fails the requests it touched (finish reason ``error``) and is raised.
        """
        group = self._admit(time.monotonic())
        t0 = time.perf_counter()
        if group:
            try:
                self._prefill(group)
            except Exception as e:
                self._fail([r for r in group if r.result is None], e)
                raise
        t1 = time.perf_counter()
        if group:
            self.stats.prefill_s += t1 - t0
        if self._batch is None:
            return bool(group)
        try:
            self._decode()
        except Exception as e:
            batch, self._batch = self._batch, None
            self._fail([s.request for s in batch.seqs], e)
            raise
        self.stats.decode_s += time.perf_counter() - t1
        return True

    def run(self, requests: Iterable[GenerationRequest]) -> list[Completion]:
        """Generate ``requests`` in the calling thread until all are done; their completions in order.

        For an engine this caller has to itself (offline generation): an error ends everything the engine holds.
        """
        requests = list(requests)
        self.submit(*requests)
        try:
            while any(r.result is None for r in requests):
                if not self.step():
                    raise RuntimeError("the engine is idle but requests are not done")
        except BaseException:
            self.abort("error", "generation stopped by an error")
            raise
        return [r.result for r in requests]  # type: ignore[misc]

    def serve_forever(self, stop: threading.Event) -> None:
        """Step whenever there is work, until ``stop`` is set (then call `abort` for what is left).

        The first request of an empty batch waits up to ``max_wait_s`` for company (or until the batch is full).
        """
        while self._wait_for_work(stop):
            try:
                self.step()
            except Exception:  # the requests it touched got an error; keep serving the others
                log.exception("a generation step failed")
            # hand the GIL over between steps: the server's threads answer finished requests and prepare new ones,
            # which join at the next step (a small model's step is mostly Python and would otherwise hold it)
            time.sleep(0)

    def wake(self) -> None:
        """Wake `serve_forever` (after setting its stop event)."""
        with self._cond:
            self._cond.notify_all()

    def abort(self, reason: str, error: str | None = None) -> None:
        """End every waiting and running request with ``reason`` (e.g. at shutdown)."""
        with self._cond:
            waiting, self._waiting = list(self._waiting), deque()
        batch, self._batch = self._batch, None
        for r in waiting + ([s.request for s in batch.seqs] if batch else []):
            if r.result is None:
                self._end(r, Completion("", reason, error=error))

    # ---- scheduling
    def _wait_for_work(self, stop: threading.Event) -> bool:
        with self._cond:
            while not stop.is_set():
                if self._batch is not None:
                    return True
                if self._waiting:
                    full = 0 < self.max_batch_size <= len(self._waiting)
                    left = self._waiting[0].submitted_at + self.max_wait_s - time.monotonic()
                    if full or left <= 0:
                        return True
                    self._cond.wait(left)
                else:
                    self._cond.wait()
        return False

    def _admit(self, now: float) -> list[GenerationRequest]:
        """Take the waiting requests the policy lets in now; cancelled and expired ones end here."""
        running = self.running
        room = math.inf if self.max_batch_size <= 0 else self.max_batch_size - running
        if self.admission == "static" and running:
            room = 0
        group, gone = [], []
        with self._cond:
            while self._waiting and len(group) < room:
                r = self._waiting.popleft()
                (gone if r.cancelled or now > r.deadline else group).append(r)
        for r in gone:
            self._end(r, Completion("", "cancelled" if r.cancelled else "timeout"))
        return group

    # ---- model work
    def _forward(
        self, mask: torch.Tensor, pos: torch.Tensor, cache: Any, ids=None, embeds=None, every_position: bool = False
    ) -> tuple[Any, Any]:
        """Last-position logits (B, V), or with ``every_position`` all of them (B, L, V), and the cache with this
        step's keys and values (None without a cache)."""
        kw = self.kv.forward_kwargs(cache, every_position)
        out = self.model.llm(input_ids=ids, inputs_embeds=embeds, attention_mask=mask, position_ids=pos, **kw)
        logits = out.logits if every_position else out.logits[:, -1]
        return logits, None if cache is None else self.kv.returned(out, cache)

    def _prefill(self, group: list[GenerationRequest]) -> None:
        """Run the new prompts (in groups of similar length, `prefill_groups`), then merge their rows into the running
        batch. All model work comes first, so an error merges nothing."""
        parts = [self._prefill_rows(rows) for rows in prefill_groups(group)]
        self.stats.prefills += 1
        for r in group:
            r.state = "running"
        for new, first, entries in parts:
            self._merge(new)
            b = self._batch
            assert b is not None
            self._advance(first, range(len(b.seqs) - len(first), len(b.seqs)), entries)

    def _prefill_rows(self, group: list[GenerationRequest]) -> tuple[_Batch, list[int], dict[int, TokenLogprob]]:
        """Run prompts together (left-padded): their rows, their first tokens and those tokens' log-probabilities."""
        items = [
            {"input_ids": torch.as_tensor(r.input_ids), "pixel_values": r.pixel_values, "image_grids": r.image_grids}
            for r in group
        ]
        batch = collate(items, self.pad_id, padding_side="left")
        dev = self.model.device
        mask = batch["attention_mask"].to(dev)
        pv, grids = batch["pixel_values"], batch["image_grids"]
        embeds = self.model.embed(
            batch["input_ids"].to(dev),
            None if pv is None else pv.to(dev),
            image_grids=None if grids is None else grids.to(dev),
        )  # (G, P, D), image features spliced in
        pos = (mask.cumsum(-1) - 1).clamp(min=0)  # per-row positions: padding does not shift a prompt
        scored = any(r.prompt_logprobs is not None for r in group)
        cache = self.kv.new() if self.use_cache else None
        logits, cache = self._forward(mask, pos, cache, embeds=embeds, every_position=scored)  # (G, V) or (G, P, V)
        past = cache if self.use_cache else embeds
        new = _Batch([self._sequence(r, int(n)) for r, n in zip(group, mask.sum(-1).tolist())], mask, past)
        if scored:
            for row, s in enumerate(new.seqs):
                if s.request.prompt_logprobs is not None:
                    s.request.prompt_token_logprobs = self._prompt_logprobs(logits[row], s.request)
            logits = logits[:, -1]
        first = choose(logits, *new.params()).tolist()
        return new, first, self._step_logprobs(logits, first, new.seqs)

    @staticmethod
    def _prompt_logprobs(logits: torch.Tensor, r: GenerationRequest) -> list[TokenLogprob | None]:
        """The prompt tokens' entries from one row's prefill logits (P, V) (its prompt is the last n positions)."""
        ids = [int(t) for t in r.input_ids]
        n, k = len(ids), int(r.prompt_logprobs or 0)
        # position t's logits predict token t + 1: the prompt's tokens after the first, from its first n - 1 positions
        scored = token_logprobs(logits[logits.shape[0] - n : logits.shape[0] - 1], ids[1:], [k] * (n - 1))
        return [None, *scored]

    @staticmethod
    def _step_logprobs(logits: torch.Tensor, tokens: list[int], seqs: list[_Sequence]) -> dict[int, TokenLogprob]:
        """The chosen tokens' entries of the rows that asked for them (by position in ``tokens``); nothing is
        computed when none did."""
        rows = [i for i, s in enumerate(seqs) if s.request.logprobs is not None]
        if not rows:
            return {}
        ks = [int(seqs[i].request.logprobs or 0) for i in rows]
        return dict(zip(rows, token_logprobs(logits[rows], [tokens[i] for i in rows], ks)))

    def _sequence(self, r: GenerationRequest, prompt_len: int) -> _Sequence:
        context = self.model.context_length
        limit = min(r.max_new_tokens, context - prompt_len) if context else r.max_new_tokens
        stops = (self.template_stops if r.chat else []) + list(r.stops)
        decode = self._decode_text if r.chat else self._decoder_after([int(t) for t in r.input_ids[-4:]])
        stream = TextStream(decode, self.eos, stops, r.on_delta, strip=r.chat)
        gen = None
        if r.seed is not None and r.temperature > 0:
            # torch takes seeds in [0, 2**64): OpenAI's are any int64, and choice i adds i
            gen = torch.Generator(device=self.model.device).manual_seed(int(r.seed) % 2**64)
        r.token_logprobs, r.prompt_token_logprobs = [], None
        return _Sequence(r, stream, 0 if r.max_new_tokens == 0 else max(limit, 1), gen)

    def _decode(self) -> None:
        """Feed every row its last token and choose the next one."""
        b = self._batch
        assert b is not None
        dev = b.mask.device
        last = torch.tensor([s.ids[-1] for s in b.seqs], device=dev)[:, None]  # (B, 1)
        mask = torch.cat([b.mask, torch.ones_like(b.mask[:, :1])], dim=1)
        if self.use_cache:
            pos = b.mask.sum(-1, keepdim=True)  # real tokens before this one, (B, 1)
            logits, b.past = self._forward(mask, pos, b.past, ids=last)
        else:
            b.past = torch.cat([b.past, self.model.llm.get_input_embeddings()(last)], dim=1)
            logits, _ = self._forward(mask, (mask.cumsum(-1) - 1).clamp(min=0), None, embeds=b.past)
        b.mask = mask
        self.stats.record_step(len(b.seqs))
        tokens = choose(logits, *b.params()).tolist()
        self._advance(tokens, range(len(b.seqs)), self._step_logprobs(logits, tokens, b.seqs))

    def _advance(self, tokens: list[int], rows: Iterable[int], entries: dict[int, TokenLogprob]) -> None:
        """Append each row's new token (and its entry, by position in ``tokens``), end the rows that are done, and
        drop them from the batch."""
        b = self._batch
        assert b is not None
        now = time.monotonic()
        done = []
        for k, (i, t) in enumerate(zip(rows, tokens)):
            s = b.seqs[i]
            if s.limit == 0:  # prompt scoring only (max_new_tokens=0): the token chosen at prefill is not kept
                done.append(i)
                self._end(s.request, self._completion(s, "", "length"))
                continue
            s.ids.append(int(t))
            if k in entries and int(t) not in self.eos:
                s.request.token_logprobs.append(entries[k])
            reason = self._check(s, now)
            if reason is not None:
                done.append(i)
                final = reason in ("stop", "length")
                text = s.stream.finish() if final else s.stream.text.strip()
                self._end(s.request, self._completion(s, text, reason))
        if done:
            self._drop(done)

    @staticmethod
    def _completion(s: _Sequence, text: str, reason: str) -> Completion:
        r = s.request
        lps = list(r.token_logprobs) if r.logprobs is not None else None
        return Completion(text, reason, list(s.ids), logprobs=lps, prompt_logprobs=r.prompt_token_logprobs)

    @staticmethod
    def _check(s: _Sequence, now: float) -> str | None:
        if s.stream.push(s.ids):
            return "stop"
        if len(s.ids) >= s.limit:
            return "length"
        if s.request.cancelled:
            return "cancelled"
        if now > s.request.deadline:
            return "timeout"
        s.stream.flush()
        return None

    # ---- batch surgery
    def _merge(self, new: _Batch) -> None:
        b = self._batch
        if b is None:
            self._batch = new
            return
        la, lb = b.mask.shape[1], new.mask.shape[1]
        n = max(la, lb)
        if self.use_cache:
            b.past = self.kv.merge(b.past, new.past)
        else:
            b.past = torch.cat([pad_left(b.past, n - la), pad_left(new.past, n - lb)])
        b.mask = torch.cat([pad_left(b.mask, n - la, dim=-1), pad_left(new.mask, n - lb, dim=-1)])
        b.seqs += new.seqs
        b._params = None

    def _drop(self, done: list[int]) -> None:
        b = self._batch
        assert b is not None
        keep = [i for i in range(len(b.seqs)) if i not in set(done)]
        if not keep:
            self._batch = None
            return
        idx = torch.tensor(keep, device=b.mask.device)
        b.seqs = [b.seqs[i] for i in keep]
        b.mask = b.mask[idx]
        b.past = self.kv.select(b.past, idx) if self.use_cache else b.past[idx]
        b._params = None
        lead = int(b.mask.any(0).long().argmax())  # leading columns that are padding in every row left
        if lead:
            b.mask = b.mask[:, lead:]
            b.past = self.kv.trim(b.past, lead) if self.use_cache else b.past[:, lead:]

    # ---- endings
    def _decoder_after(self, context: list[int]):
        """ids -> the text they add after ``context`` (a raw completion continues its prompt's text: SentencePiece
        drops a leading space when ids are decoded alone, and a split character may end the prompt)."""
        head = self._decode_text(context)

        def decode(ids: list[int]) -> str:
            whole = self._decode_text(context + ids)
            return whole[len(os.path.commonprefix([head, whole])) :]

        return decode

    def _decode_text(self, ids: list[int]) -> str:
        # no clean-up of spaces: it can rewrite text already streamed when later tokens arrive
        return self._decode_ids(ids)

    def _end(self, r: GenerationRequest, c: Completion) -> None:
        r.state, r.result = "done", c
        self.stats.record_end(c.finish_reason)
        if r.on_finish is not None:
            r.on_finish(c)

    def _fail(self, requests: list[GenerationRequest], e: BaseException) -> None:
        for r in requests:
            if r.result is None:
                self._end(r, Completion("", "error", error=f"{type(e).__name__}: {e}"))
