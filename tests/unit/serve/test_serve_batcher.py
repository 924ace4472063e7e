"""Per-row sampling and stopping of the batcher, without HTTP: greedy/top-p rows, stop strings split across tokens."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("pydantic", reason="needs the serve extras: pip install -e .[serve]")

from scitune.serve.batcher import BatchStats, Delta, Finished, Job, _Row, _RowSampler  # noqa: E402


class _Inline:
    """Stands in for the event loop and queue: events are collected at once."""

    def __init__(self):
        self.events = []

    def call_soon_threadsafe(self, fn, *args):
        fn(*args)

    def put_nowait(self, ev):
        self.events.append(ev)


def _row(pieces: list[str], stream=True, stops=(), max_tokens=50, template_stops=("###",)):
    sink = _Inline()
    job = Job(input_ids=[1], max_tokens=max_tokens, stops=list(stops), stream=stream, loop=sink, events=sink)
    row = _Row(job, 0, lambda ids: "".join(pieces[i] for i in ids), eos={99}, stops=list(template_stops),
               stats=BatchStats())  # fmt: skip
    return row, sink.events


def _run(row, n: int) -> None:
    for t in range(1, n + 1):
        if row.step(list(range(t)), now=0.0):
            return


def test_sampler_greedy_rows_keep_only_the_argmax_and_top_p_cuts_the_tail():
    scores = torch.tensor([[1.0, 3.0, 2.0, 0.0], [1.0, 3.0, 2.0, 0.0], [1.0, 3.0, 2.0, 0.0]])
    out = _RowSampler(torch.tensor([0.0, 2.0, 1.0]), torch.tensor([1.0, 1.0, 0.5]))(None, scores.clone())
    assert torch.isfinite(out[0]).tolist() == [False, True, False, False]  # greedy
    assert torch.allclose(out[1], scores[1] / 2)  # temperature only
    probs = scores[2].softmax(-1)
    assert probs[1] > 0.5 and torch.isfinite(out[2]).tolist() == [False, True, False, False]  # top-p 0.5: one token
    assert not math.isinf(out[2][1])


def test_stream_never_sends_a_stop_string_split_across_tokens():
    pieces = ["Hello", " wor", "ld", " #", "##", " tail"]
    row, events = _row(pieces)
    _run(row, len(pieces))
    deltas = "".join(e.text for e in events if isinstance(e, Delta))
    final = [e for e in events if isinstance(e, Finished)]
    assert deltas == "Hello world" and "#" not in deltas
    assert len(final) == 1 and final[0].text == "Hello world" and final[0].finish_reason == "stop"
    assert final[0].completion_tokens == 5


def test_user_stop_eos_and_length():
    row, events = _row(["a", "b", "STOP", "c"], stops=["ST"])
    _run(row, 4)
    assert [e.text for e in events if isinstance(e, Finished)] == ["ab"]
    pieces = ["x"] * 99 + ["<eos>"]
    row, events = _row(pieces, stream=False)
    row.step([0, 1, 99], now=0.0)
    assert events == [Finished(0, "xx", "stop", 3)]
    row, events = _row(["y"] * 10, stream=False, max_tokens=4)
    _run(row, 10)
    assert events == [Finished(0, "yyyy", "length", 4)]


def test_cancelled_and_expired_rows_stop_quietly_or_with_a_timeout():
    row, events = _row(["a"] * 10)
    row.job.cancel()
    assert row.step([0], now=0.0) and events == [] and row.stats.cancelled == 1
    row, events = _row(["a"] * 10)
    row.job.deadline = 1.0
    assert row.step([0], now=2.0)
    assert events[-1].error.status == 408 and row.stats.timed_out == 1
