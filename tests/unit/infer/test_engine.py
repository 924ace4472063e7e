"""The generation engine on tiny random models: a request gets the same tokens alone, in a static batch, joining a
running batch or outliving rows that leave; the KV cache changes nothing; stops, limits, seeds, streaming, images,
AnyRes, cancellation and deadlines."""

from __future__ import annotations

import threading
import time

import pytest
from PIL import Image

from scitune.config.schema import GenerationConfig
from scitune.infer.engine import GenerationEngine, GenerationRequest
from scitune.infer.generate import Generator, Prompt
from scitune.loader import tiny_vlm

MAX_NEW = 12


@pytest.fixture(scope="module")
def tiny():
    return tiny_vlm()


def _prompts() -> list[Prompt]:
    imgs = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    return [
        Prompt.single("What is shown?", imgs[:1]),
        Prompt.single("A longer text-only prompt without any image at all"),
        Prompt.single("Compare", imgs),
        Prompt.single("hi"),
    ]


def _requests(tiny, prompts=None, **cfg) -> list[GenerationRequest]:
    """Fresh requests (a request is used once) for the prompts, greedy unless ``cfg`` says otherwise."""
    return Generator(*tiny).requests(prompts or _prompts(), GenerationConfig(**{"max_new_tokens": MAX_NEW, **cfg}))


def _ids(completions) -> list[list[int]]:
    return [c.token_ids for c in completions]


def _alone(tiny, requests, **kw) -> list[list[int]]:
    return [GenerationEngine(*tiny, **kw).run([r])[0].token_ids for r in requests]


def test_greedy_alone_static_batch_and_hf_generate_agree(tiny):
    model, proc = tiny
    alone = _alone(tiny, _requests(tiny))
    static = GenerationEngine(*tiny, max_batch_size=0, admission="static").run(_requests(tiny))
    assert _ids(static) == alone
    # transformers' own generate (left-padded batch) picks the same tokens: positions and masks are right
    batch = Generator(*tiny)._batch(_prompts())
    eos = proc.tokenizer.eos_token_id
    kw = {"max_new_tokens": MAX_NEW, "do_sample": False, "pad_token_id": proc.pad_token_id, "eos_token_id": eos}
    hf = model.generate(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], **kw).tolist()
    for ours, theirs in zip(alone, hf):
        n = theirs.index(eos) + 1 if eos in theirs else len(theirs)
        assert ours == theirs[:n]


@pytest.mark.parametrize("use_cache", [True, False])
def test_rows_joining_mid_way_and_leaving_early_get_the_same_tokens(tiny, use_cache):
    alone = _alone(tiny, _requests(tiny))
    short = _requests(tiny, max_new_tokens=3)[3]  # leaves after 3 tokens while the others go on
    a, b, c, d = _requests(tiny)
    engine = GenerationEngine(*tiny, max_batch_size=8, use_cache=use_cache)
    engine.submit(a, short)
    for _ in range(2):
        engine.step()
    engine.submit(b)  # joins a running batch, mid-way
    engine.step()
    assert engine.running == 2 and short.result is not None and short.result.finish_reason == "length"
    engine.submit(c, d)
    while any(r.result is None for r in (a, b, c, d)):
        assert engine.step()
    assert [r.result.token_ids for r in (a, b, c, d)] == alone
    assert short.result.token_ids == alone[3][:3]
    assert engine.running == 0 and not engine.step()  # idle: every row left the batch
    assert engine.stats.prefills == 3 and engine.stats.max_batch_rows == 4


def test_kv_cache_equals_no_cache_and_generator_keeps_its_api(tiny):
    g = Generator(*tiny)
    cfg = GenerationConfig(max_new_tokens=MAX_NEW)
    cached = g.generate(_prompts(), cfg)
    assert cached == g.generate(_prompts(), cfg, use_cache=False)
    assert cached == [g.generate([p], cfg)[0] for p in _prompts()]
    assert g.generate([], cfg) == []


def test_max_batch_size_and_static_admission(tiny):
    engine = GenerationEngine(*tiny, max_batch_size=2, admission="static")
    reqs = _requests(tiny)
    engine.submit(*reqs[:2])
    engine.step()
    engine.submit(*reqs[2:])
    engine.step()
    assert engine.running == 2 and engine.waiting == 2  # static: nobody joins a running batch
    while engine.running:
        engine.step()
    engine.step()
    assert all(r.state == "running" for r in reqs[2:]) and engine.waiting == 0
    cont = GenerationEngine(*tiny, max_batch_size=3)
    reqs = _requests(tiny)
    cont.submit(*reqs)
    cont.step()
    assert cont.running == 3 and cont.waiting == 1  # continuous, but never over max_batch_size
    with pytest.raises(ValueError, match="admission"):
        GenerationEngine(*tiny, admission="eager")


def test_stop_strings_max_tokens_and_eos(tiny):
    full = GenerationEngine(*tiny).run(_requests(tiny, max_new_tokens=20)[:1])[0]
    assert full.finish_reason in ("length", "stop")
    stop = full.text[3:6]
    assert stop.strip(), full.text
    cut = GenerationEngine(*tiny).run(_requests(tiny, max_new_tokens=20, stop=[stop])[:1])[0]
    assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.index(stop)].strip()
    short = GenerationEngine(*tiny).run(_requests(tiny, max_new_tokens=2)[:1])[0]
    assert short.finish_reason == "length" and short.completion_tokens == 2
    # EOS ends a row and is counted, but is not text
    ids = full.token_ids
    k = next(k for k in range(1, len(ids)) if ids[k] not in ids[:k])
    engine = GenerationEngine(*tiny)
    engine.eos = {ids[k]}  # a token the model picks, taken for EOS
    done = engine.run(_requests(tiny, max_new_tokens=20)[:1])[0]
    head = GenerationEngine(*tiny).run(_requests(tiny, max_new_tokens=k)[:1])[0]
    assert (done.finish_reason, done.token_ids, done.text) == ("stop", ids[: k + 1], head.text)


def _seeded(tiny, seed: int) -> GenerationRequest:
    r = _requests(tiny, temperature=1.3, top_p=0.95)[0]
    r.seed = seed
    return r


def test_seeded_sampling_is_the_same_alone_and_in_any_batch(tiny):
    alone = GenerationEngine(*tiny).run([_seeded(tiny, 5)])[0].token_ids
    assert GenerationEngine(*tiny).run([_seeded(tiny, 5)])[0].token_ids == alone
    assert GenerationEngine(*tiny).run([_seeded(tiny, 6)])[0].token_ids != alone
    # joining a batch of greedy and unseeded sampled rows that started before it
    engine = GenerationEngine(*tiny, max_batch_size=8)
    others = _requests(tiny) + _requests(tiny, temperature=1.0)
    engine.submit(*others[:3])
    engine.step()
    mine = _seeded(tiny, 5)
    engine.submit(mine, *others[3:])
    while mine.result is None:
        engine.step()
    assert mine.result.token_ids == alone


def test_streamed_deltas_concatenate_to_the_final_text(tiny):
    pieces: dict[int, list[str]] = {0: [], 1: []}
    reqs = _requests(tiny, max_new_tokens=20)[:2]
    for i, r in enumerate(reqs):
        r.on_delta = pieces[i].append
    finished = []
    reqs[0].on_finish = finished.append
    out = GenerationEngine(*tiny).run(reqs)
    for i, c in enumerate(out):
        assert "".join(pieces[i]) == c.text and len([p for p in pieces[i] if p]) > 1
    assert finished == [out[0]]


def test_anyres_prompts_mixed_with_fixed_and_text_only():
    m, proc = tiny_vlm(anyres=["1x1", "1x2", "2x1", "2x2"])
    sizes = [(32, 32), (64, 32), (32, 64), (64, 64)]
    prompts = [Prompt.single("What is shown?", [Image.new("RGB", s, "red")]) for s in sizes]
    prompts.append(Prompt.single("A text-only prompt"))
    gen, cfg = Generator(m, proc), GenerationConfig(max_new_tokens=6)
    alone = [GenerationEngine(m, proc).run([r])[0].token_ids for r in gen.requests(prompts, cfg)]
    reqs = gen.requests(prompts, cfg)
    engine = GenerationEngine(m, proc, max_batch_size=8)
    engine.submit(reqs[0], reqs[4])
    engine.step()
    engine.submit(*reqs[1:4])  # tiles of other grids join the running batch
    while any(r.result is None for r in reqs):
        engine.step()
    assert [r.result.token_ids for r in reqs] == alone


def test_cancelled_and_expired_requests_end_at_their_next_step(tiny):
    a, b, c = _requests(tiny)[:3]
    c.cancel()  # cancelled while waiting: never runs
    engine = GenerationEngine(*tiny)
    engine.submit(a, b, c)
    engine.step()
    assert c.result.finish_reason == "cancelled" and c.result.token_ids == []
    a.cancel()
    b.deadline = time.monotonic() - 1
    engine.step()
    assert (a.result.finish_reason, b.result.finish_reason) == ("cancelled", "timeout")
    assert engine.running == 0 and engine.stats.cancelled == 2 and engine.stats.timed_out == 1


def test_serve_forever_admits_requests_from_other_threads_and_stops(tiny):
    engine = GenerationEngine(*tiny, max_batch_size=8, max_wait_s=0.01)
    stop = threading.Event()
    thread = threading.Thread(target=engine.serve_forever, args=(stop,), daemon=True)
    thread.start()
    reqs = _requests(tiny)
    done = threading.Event()
    left = [len(reqs)]

    def finished(_):
        left[0] -= 1
        if not left[0]:
            done.set()

    for r in reqs:
        r.on_finish = finished
        engine.submit(r)
        time.sleep(0.005)
    assert done.wait(30)
    stop.set()
    engine.wake()
    thread.join(10)
    assert not thread.is_alive()
    assert [r.result.token_ids for r in reqs] == _alone(tiny, _requests(tiny))


def test_a_failing_step_fails_only_the_requests_it_touched(tiny, monkeypatch):
    engine = GenerationEngine(*tiny)
    bad = _requests(tiny)[0]
    bad.pixel_values = bad.pixel_values[:0]  # image tokens without pixels: the prefill raises
    good = _requests(tiny)[1]
    engine.submit(good)
    engine.step()
    engine.submit(bad)
    with pytest.raises(ValueError, match="image-token positions"):
        engine.step()
    assert bad.result.finish_reason == "error" and "ValueError" in bad.result.error
    while good.result is None:
        engine.step()
    assert good.result.token_ids == _alone(tiny, _requests(tiny))[1]


def test_chat_session_streams_its_reply_and_keeps_the_history(tiny):
    from scitune.infer.generate import ChatSession

    chat = ChatSession(*tiny, GenerationConfig(max_new_tokens=8))
    pieces: list[str] = []
    reply = chat.ask("What is shown?", Image.new("RGB", (32, 32), "red"), on_delta=pieces.append)
    assert "".join(pieces) == reply and [m.role for m in chat.messages] == ["user", "assistant"]
    assert chat.ask("And now?") == Generator(*tiny).generate([Prompt(chat.messages[:-1], chat.images)], chat.cfg)[0]
