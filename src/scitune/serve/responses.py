"""A queued job's events as HTTP responses: waiting for a whole answer, server-sent events, and chat completions in
OpenAI's shapes (`scitune.serve.completions` builds the legacy completions from the same pieces)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from scitune.serve.batcher import Delta, Failed, Finished, Job, timeout_error
from scitune.serve.logprobs import TokenSpeller, chat_content
from scitune.serve.prepare import Prepared
from scitune.serve.schema import AssistantMessage, ChatCompletion, Choice, ChoiceLogprobs, Usage, completion_id

IGNORED_HEADER = "X-Scitune-Ignored"
"""Names the request fields that were accepted but ignored (comma-separated); absent when there were none."""


def ignored_headers(prep: Prepared) -> dict[str, str]:
    return {IGNORED_HEADER: ", ".join(prep.ignored)} if prep.ignored else {}


class JobStream(StreamingResponse):
    """A streamed response whose job is cancelled however the response ends (done, error, disconnect)."""

    def __init__(self, content: AsyncIterator[str], job: Job, headers: dict[str, str] | None = None):
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})}
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.job = job

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancel()


def sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def next_event(job: Job) -> Delta | Finished | Failed:
    """The job's next event, or a timeout failure once its deadline passes."""
    assert job.events is not None
    try:
        # a get() cut short by the timeout leaves its item in the queue, so no event is lost
        return await asyncio.wait_for(job.events.get(), max(job.deadline - time.monotonic(), 0.0))
    except asyncio.TimeoutError:
        job.cancel()
        return Failed(timeout_error())


async def gather(request: Request, job: Job) -> dict[int, Finished] | None:
    """Every choice of a non-streamed job by index; None when the client left (the job is then cancelled)."""
    done: dict[int, Finished] = {}
    while len(done) < job.choices:
        waiter = asyncio.ensure_future(next_event(job))
        while not waiter.done():
            await asyncio.wait([waiter], timeout=0.5)
            if not waiter.done() and await request.is_disconnected():
                waiter.cancel()
                job.cancel()
                return None
        ev = waiter.result()
        if isinstance(ev, Failed):
            raise ev.error
        if isinstance(ev, Finished):
            done[ev.index] = ev
    return done


def usage(prompt_tokens: int, finished: list[Finished] | int) -> Usage:
    n_out = finished if isinstance(finished, int) else sum(f.completion_tokens for f in finished)
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=n_out, total_tokens=prompt_tokens + n_out)


async def chat_response(request: Request, prep: Prepared, model: str, speller: Callable[[], TokenSpeller]) -> Response:
    """A whole chat completion (a client that leaves cancels it); ``speller`` gives a thread's `TokenSpeller`."""
    done = await gather(request, prep.job)
    if done is None:
        return Response(status_code=499)  # nobody is listening

    def build() -> dict:
        choices = []
        for i, f in sorted(done.items()):
            lps = None if f.logprobs is None else ChoiceLogprobs(content=chat_content(speller(), f.logprobs))
            message = AssistantMessage(content=f.text)
            choices.append(Choice(index=i, message=message, finish_reason=f.finish_reason, logprobs=lps))
        body = ChatCompletion(model=model, choices=choices, usage=usage(prep.prompt_tokens, list(done.values())))
        return body.model_dump()

    return await json_reply(prep, build)


async def json_reply(prep: Any, build: Callable[[], dict]) -> Response:
    """The response ``build`` makes, with the ignored-fields header; built off the event loop when it spells
    log-probabilities (decoding each token of a long answer)."""
    body = await asyncio.to_thread(build) if prep.job.logprobs is not None else build()
    return JSONResponse(body, headers=ignored_headers(prep))


async def chat_events(
    prep: Prepared, model: str, include_usage: bool, speller: Callable[[], TokenSpeller]
) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format, ending with ``data: [DONE]`` (or an error event); with
    ``logprobs`` each chunk carries the entries of the tokens its text came from."""
    job = prep.job
    head = {"id": completion_id(), "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    spell = speller() if job.logprobs is not None else None
    sent: dict[int, list[int]] = {i: [] for i in range(job.choices)}  # token ids already in a chunk, per choice

    def logprobs(index: int, entries) -> dict | None:
        if spell is None:
            return None
        content = chat_content(spell, entries, sent[index][-8:])
        sent[index] += [e.token_id for e in entries]
        return {"content": content, "refusal": None}

    def chunk(index: int, delta: dict, finish: str | None = None, lps: dict | None = None) -> str:
        return sse({**head, "choices": [{"index": index, "delta": delta, "logprobs": lps, "finish_reason": finish}]})

    for i in range(job.choices):
        yield chunk(i, {"role": "assistant", "content": ""})
    finished, tokens = 0, 0
    while finished < job.choices:
        ev = await next_event(job)
        if isinstance(ev, Failed):
            yield sse(ev.error.body())
            return
        if isinstance(ev, Delta):
            yield chunk(ev.index, {"content": ev.text}, None, logprobs(ev.index, ev.logprobs))
        else:
            finished += 1
            tokens += ev.completion_tokens
            rest = (ev.logprobs or [])[len(sent[ev.index]) :]  # tokens that added no text (e.g. trailing spaces)
            yield chunk(ev.index, {}, ev.finish_reason, logprobs(ev.index, rest) if rest else None)
    if include_usage:
        yield sse({**head, "choices": [], "usage": usage(prep.prompt_tokens, tokens).model_dump()})
    yield "data: [DONE]\n\n"
