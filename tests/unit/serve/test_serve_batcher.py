"""The batcher without HTTP: a job's choices become engine requests, their endings become the job's events, and the
generation thread serves jobs and stops cleanly."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("pydantic", reason="needs the serve extras: pip install -e .[serve]")

from scitune.infer.engine import Completion  # noqa: E402
from scitune.serve.batcher import Batcher, Delta, Failed, Finished, Job  # noqa: E402


class _Inline:
    """Stands in for the event loop and queue: events are collected at once."""

    def __init__(self):
        self.events = []

    def call_soon_threadsafe(self, fn, *args):
        fn(*args)

    def put_nowait(self, ev):
        self.events.append(ev)


def _job(**kw) -> tuple[Job, list]:
    sink = _Inline()
    return Job(input_ids=[1, 2], loop=sink, events=sink, **kw), sink.events


def test_choices_become_requests_with_their_own_seeds_and_settings():
    job, _ = _job(n=3, max_tokens=5, temperature=0.7, top_p=0.9, stops=["##"], seed=10, stream=True)
    rows = job.requests()
    assert [r.seed for r in rows] == [10, 11, 12]
    assert {(r.max_new_tokens, r.temperature, r.top_p, tuple(r.stops)) for r in rows} == {(5, 0.7, 0.9, ("##",))}
    assert all(r.on_delta is not None for r in rows)
    assert _job(n=2)[0].requests()[0].on_delta is None  # not streamed
    assert [r.seed for r in _job(n=2)[0].requests()] == [None, None]
    job.cancel()
    assert all(r.cancelled for r in rows)


def test_endings_become_events():
    job, events = _job(n=2, stream=True)
    a, b = job.requests()
    a.on_delta("Hel")
    a.on_finish(Completion("Hello", "stop", [5, 6, 2]))
    b.on_finish(Completion("Hi there", "length", [7, 8]))
    assert events == [Delta(0, "Hel"), Finished(0, "Hello", "stop", 3), Finished(1, "Hi there", "length", 2)]
    for reason, status in (("timeout", 408), ("error", 500), ("shutdown", 503)):
        job, events = _job()
        job.requests()[0].on_finish(Completion("", reason, error="RuntimeError: boom"))
        assert isinstance(events[0], Failed) and events[0].error.status == status
    job, events = _job(stream=True)
    row = job.requests()[0]
    job.cancel()  # the client left: nothing more is sent
    row.on_delta("x")
    row.on_finish(Completion("x", "cancelled"))
    assert events == []


def test_batcher_serves_jobs_in_its_thread_and_fails_the_rest_at_shutdown():
    from scitune.infer.engine import GenerationEngine
    from scitune.loader import tiny_vlm

    model, processor = tiny_vlm()
    ids = [1, 5, 6, 7]

    async def main():
        engine = GenerationEngine(model, processor, max_batch_size=4)
        batcher = Batcher(engine, max_queue=2)
        with pytest.raises(RuntimeError, match="start"):
            batcher.submit(Job(input_ids=ids))
        await batcher.start()
        jobs = [Job(input_ids=ids, n=2, max_tokens=3, temperature=0) for _ in range(2)]
        for job in jobs:
            batcher.submit(job)
        done = [[await job.events.get() for _ in range(2)] for job in jobs]
        endless = Job(input_ids=ids, max_tokens=100_000, temperature=0)
        batcher.submit(endless)
        while engine.running == 0:
            await asyncio.sleep(0.01)
        await batcher.stop()  # while it is generating
        return done, await endless.events.get(), batcher

    done, last, batcher = asyncio.run(main())
    assert all(isinstance(ev, Finished) and 0 < ev.completion_tokens <= 3 for events in done for ev in events)
    assert len({ev.text for events in done for ev in events}) == 1  # greedy: one prompt, one text in every row
    assert isinstance(last, Failed) and last.error.status == 503
    assert batcher.stats.requests == 5 and batcher.queued == 0 and batcher.engine.running == 0


def test_a_served_anyres_request_generates_what_offline_generation_does():
    import base64
    import io

    from PIL import Image

    from scitune.config.schema import GenerationConfig
    from scitune.infer.engine import GenerationEngine
    from scitune.infer.generate import Generator, Prompt
    from scitune.loader import tiny_vlm
    from scitune.serve.config import ServeConfig
    from scitune.serve.prepare import RequestPreparer
    from scitune.serve.schema import ChatCompletionRequest

    m, proc = tiny_vlm(anyres=["1x1", "1x2", "2x2"])
    buf = io.BytesIO()
    Image.new("RGB", (64, 32), "red").save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What?"}]
    body = {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 6, "temperature": 0}
    job = (
        RequestPreparer(m, proc, ServeConfig(checkpoint="unused"), "tiny")
        .prepare(ChatCompletionRequest.model_validate(body))
        .job
    )
    assert job.image_grids is not None and len(job.image_grids) == 1  # the grid (and size) the model packs tiles by
    served = GenerationEngine(m, proc).run(job.requests())[0].text
    image = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    assert (
        served == Generator(m, proc).generate([Prompt.single("What?", [image])], GenerationConfig(max_new_tokens=6))[0]
    )
