"""``POST /v1/completions``: plain prompts given to the LLM as raw text (no chat template), as lm-evaluation-harness's
``local-completions`` model expects, and OpenAI's legacy response and stream shapes (``echo``, ``logprobs``).

``echo`` with ``logprobs`` returns the prompt tokens' log-probabilities too, the first one ``null``: with
``max_tokens: 1`` (or 0) that is how lm-evaluation-harness computes a loglikelihood.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import Response

from scitune.serve.batcher import Delta, Failed, Finished, Job
from scitune.serve.logprobs import LegacyLogprobs, TokenSpeller
from scitune.serve.prepare import Prepared, RequestPreparer
from scitune.serve.responses import gather, json_reply, next_event, sse, usage
from scitune.serve.schema import (
    ApiError,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    TextCompletion,
    completion_id,
)

MAX_STOPS = 16
"""Stop strings per request: lm-evaluation-harness's local-completions sends all of a task's ``until`` strings and
the EOS uncut (its chat model cuts them to OpenAI's 4)."""


@dataclass
class PreparedCompletion(Prepared):
    """A completions job and what its response needs: each prompt's ids and text (for ``echo``)."""

    prompts: list[list[int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    echo: bool = False


class CompletionPreparer(RequestPreparer):
    """A `RequestPreparer` that also prepares completions requests (one object: one set of tokenizer copies)."""

    def prepare_completion(self, req: CompletionRequest) -> PreparedCompletion:
        """Validate ``req`` and build its `Job` (CPU work: call it off the event loop).

        Text prompts are tokenized with the tokenizer's special tokens (BOS, as vLLM does), token ids are taken as
        given. Text-only: the image placeholder is refused in both.
        """
        stops = self.check(req, MAX_STOPS)
        prompts = req.prompt_list()
        if not prompts:
            raise ApiError(400, "prompt must not be empty", "invalid_value", "prompt")
        if len(prompts) > self.cfg.max_prompts:
            raise ApiError(400, f"at most {self.cfg.max_prompts} prompts per request", "invalid_value", "prompt")
        tokenizer = self.processors.get().tokenizer
        vocab = self.model.llm.get_input_embeddings().num_embeddings
        image_id = self.processor.image_token_id
        ids_list, texts, chars = [], [], 0
        for i, p in enumerate(prompts):
            param = "prompt" if len(prompts) == 1 else f"prompt.{i}"
            if isinstance(p, str):
                chars += len(p)
                if self.max_text_chars and chars > self.max_text_chars:
                    raise self._too_much_text(chars, "prompt")
                if self.processor.image_token in p:
                    msg = f"text may not contain {self.processor.image_token!r}: /v1/completions is text-only"
                    raise ApiError(400, msg, "invalid_value", param)
                ids = list(tokenizer(p, add_special_tokens=True).input_ids)
            else:
                ids = list(p)
                bad = next((t for t in ids if t >= vocab or t == image_id), None)
                if bad is not None:
                    what = "the image token" if bad == image_id else f"outside the vocabulary (size {vocab})"
                    raise ApiError(400, f"token id {bad} is {what}", "invalid_value", param)
            if not ids:
                raise ApiError(400, "the prompt has no tokens", "invalid_value", param)
            ids_list.append(ids)
            texts.append(p if isinstance(p, str) else self._text(tokenizer, ids) if req.echo else "")
        job = Job(
            input_ids=ids_list[0],
            more_prompts=ids_list[1:],
            n=req.n,
            max_tokens=self._max_tokens(req, max(len(ids) for ids in ids_list)),
            **req.sampling(),
            stops=stops,
            seed=req.seed,
            chat=False,
            logprobs=req.logprobs,
            prompt_logprobs=req.logprobs if req.echo else None,
            stream=req.stream,
            deadline=time.monotonic() + self.cfg.timeout_s,
        )
        total = sum(len(ids) for ids in ids_list)
        return PreparedCompletion(job, total, req.ignored_fields(), ids_list, texts, req.echo)

    @staticmethod
    def _text(tokenizer, ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _legacy(speller: TokenSpeller, prep: PreparedCompletion, prompt: int) -> LegacyLogprobs:
    """A choice's legacy logprobs builder: generated tokens are spelled after their prompt."""
    return LegacyLogprobs(speller, before=[] if prep.echo else prep.prompts[prompt])


def _echo(legacy: LegacyLogprobs, prep: PreparedCompletion, prompt: int, entries) -> CompletionLogprobs:
    """The prompt's part of a choice's logprobs (offsets then go on after the prompt's text as sent)."""
    out = legacy.add(entries or [None] * len(prep.prompts[prompt]), prep.prompts[prompt])
    legacy.skip_to(len(prep.texts[prompt]))
    return out


def _joined(a: CompletionLogprobs, b: CompletionLogprobs) -> CompletionLogprobs:
    return CompletionLogprobs(
        tokens=a.tokens + b.tokens,
        token_logprobs=a.token_logprobs + b.token_logprobs,
        top_logprobs=a.top_logprobs + b.top_logprobs,
        text_offset=a.text_offset + b.text_offset,
    )


async def completion_response(
    request: Request, prep: PreparedCompletion, model: str, speller: Callable[[], TokenSpeller]
) -> Response:
    """A whole legacy completion (a client that leaves cancels it)."""
    done = await gather(request, prep.job)
    if done is None:
        return Response(status_code=499)
    n = prep.job.n

    def build() -> dict:
        choices = []
        for i, f in sorted(done.items()):
            p = i // n
            lps = None
            if prep.job.logprobs is not None:
                legacy = _legacy(speller(), prep, p)
                head = _echo(legacy, prep, p, f.prompt_logprobs) if prep.echo else CompletionLogprobs()
                lps = _joined(head, legacy.add(f.logprobs or []))
            text = (prep.texts[p] if prep.echo else "") + f.text
            choices.append(CompletionChoice(index=i, text=text, logprobs=lps, finish_reason=f.finish_reason))
        body = TextCompletion(model=model, choices=choices, usage=usage(prep.prompt_tokens, list(done.values())))
        return body.model_dump()

    return await json_reply(prep, build)


async def completion_events(
    prep: PreparedCompletion, model: str, include_usage: bool, speller: Callable[[], TokenSpeller]
) -> AsyncIterator[str]:
    """Legacy completion chunks (``object: text_completion``), ending with ``data: [DONE]``; with ``echo`` a choice's
    first chunk is its prompt."""
    job, n = prep.job, prep.job.n
    head = {"id": completion_id("cmpl-"), "object": "text_completion", "created": int(time.time()), "model": model}
    spell = speller() if job.logprobs is not None else None
    legacy = {i: _legacy(spell, prep, i // n) for i in range(job.choices)} if spell else {}
    sent = dict.fromkeys(range(job.choices), 0)  # generated entries already in a chunk, per choice
    started: set[int] = set()

    def chunk(index: int, text: str, lps: CompletionLogprobs | None = None, finish: str | None = None) -> str:
        choice = {"index": index, "text": text, "logprobs": None if lps is None else lps.model_dump()}
        return sse({**head, "choices": [{**choice, "finish_reason": finish}]})

    def generated(index: int, entries) -> CompletionLogprobs | None:
        sent[index] += len(entries)
        return legacy[index].add(entries) if spell else None

    finished, tokens = 0, 0
    while finished < job.choices:
        ev = await next_event(job)
        if isinstance(ev, Failed):
            yield sse(ev.error.body())
            return
        if prep.echo and ev.index not in started:
            started.add(ev.index)
            entries = ev.prompt_logprobs
            p = ev.index // n
            yield chunk(ev.index, prep.texts[p], _echo(legacy[ev.index], prep, p, entries) if spell else None)
        if isinstance(ev, Delta):
            yield chunk(ev.index, ev.text, generated(ev.index, ev.logprobs))
        elif isinstance(ev, Finished):
            finished += 1
            tokens += ev.completion_tokens
            rest = (ev.logprobs or [])[sent[ev.index] :]
            yield chunk(ev.index, "", generated(ev.index, rest) if rest else None, ev.finish_reason)
    if include_usage:
        yield sse({**head, "choices": [], "usage": usage(prep.prompt_tokens, tokens).model_dump()})
    yield "data: [DONE]\n\n"
