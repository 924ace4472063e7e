"""What the server's OpenAI options need from the engine: per-row top-k, the chosen tokens' log-probabilities with
their alternatives, the prompt's own log-probabilities (also without generating), and raw-text completions."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import TopKLogitsWarper

from scitune.config.schema import GenerationConfig
from scitune.infer.engine import GenerationEngine, GenerationRequest
from scitune.infer.generate import Generator, Prompt
from scitune.infer.logprobs import token_logprobs
from scitune.infer.sampling import choose, warp
from scitune.infer.stream import TextStream
from scitune.loader import tiny_vlm


@pytest.fixture(scope="module")
def tiny():
    return tiny_vlm()


def _text_request(tiny, text: str = "hello world the plot", **kw) -> GenerationRequest:
    ids = tiny[1].tokenizer(text).input_ids
    return GenerationRequest(list(ids), **{"max_new_tokens": 6, **kw})


def _reference_logprobs(tiny, ids: list[int]) -> torch.Tensor:
    """log-softmax of the LLM's logits over ``ids`` in one plain forward, (len(ids), V)."""
    model = tiny[0]
    with torch.no_grad():
        logits = model.llm(input_ids=torch.tensor([ids])).logits[0]
    return logits.float().log_softmax(-1)


def test_warp_top_k_per_row_matches_transformers():
    scores = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    out = warp(scores.clone(), torch.ones(3), torch.ones(3), torch.tensor([2, 0, 7]))
    assert torch.equal(out[0], TopKLogitsWarper(2)(None, scores[:1].clone())[0])
    assert torch.equal(out[1], scores[1])  # 0 = off
    assert torch.equal(out[2], TopKLogitsWarper(7)(None, scores[2:].clone())[0])
    # top-k 1 samples the argmax whatever the temperature and generator
    gens = [torch.Generator().manual_seed(s) for s in range(3)]
    picked = choose(scores, torch.full((3,), 2.0), torch.ones(3), gens, torch.ones(3, dtype=torch.long))
    assert torch.equal(picked, scores.argmax(-1))


def test_token_logprobs_are_log_softmax_and_the_top_k():
    logits = torch.randn(600, 20, generator=torch.Generator().manual_seed(1))  # more rows than one chunk
    targets = torch.randint(0, 20, (600,)).tolist()
    ks = [3 if i % 2 else 0 for i in range(600)]
    got = token_logprobs(logits, targets, ks)
    lp = logits.log_softmax(-1)
    for i in (0, 1, 599):
        assert got[i].token_id == targets[i] and got[i].logprob == pytest.approx(lp[i, targets[i]].item(), abs=1e-6)
        want = lp[i].topk(ks[i]) if ks[i] else None
        assert [t for t, _ in got[i].top] == ([] if want is None else want.indices.tolist())


def test_generated_logprobs_match_a_plain_forward_and_change_nothing(tiny):
    plain = GenerationEngine(*tiny).run([_text_request(tiny, chat=False)])[0]
    r = _text_request(tiny, chat=False, logprobs=3)
    c = GenerationEngine(*tiny).run([r])[0]
    assert c.token_ids == plain.token_ids and c.text == plain.text and plain.logprobs is None
    ids = list(r.input_ids) + c.token_ids
    ref = _reference_logprobs(tiny, ids)
    n = len(r.input_ids)
    assert len(c.logprobs) == len(c.token_ids)
    for j, e in enumerate(c.logprobs):
        row = ref[n - 1 + j]  # the position before token j predicts it
        assert e.token_id == c.token_ids[j] and e.logprob == pytest.approx(row[e.token_id].item(), abs=1e-4)
        assert [t for t, _ in e.top] == row.topk(3).indices.tolist()
        assert e.top[0][0] == e.token_id  # greedy: the chosen token is the most likely one
    assert r.token_logprobs == c.logprobs  # the live list the server's streaming reads


def test_prompt_logprobs_in_a_batch_and_without_generating(tiny):
    texts = ["hello world the plot", "a much longer prompt about a figure with several bars"]
    alone = [GenerationEngine(*tiny).run([_text_request(tiny, t, prompt_logprobs=2)])[0] for t in texts]
    batch = [_text_request(tiny, t, prompt_logprobs=2, max_new_tokens=0) for t in texts]
    batch.append(_text_request(tiny, "another row generating meanwhile"))
    out = GenerationEngine(*tiny).run(batch)  # left padding: the short prompt's positions are shifted
    for text, single, scored in zip(texts, alone, out):
        ids = list(tiny[1].tokenizer(text).input_ids)
        ref = _reference_logprobs(tiny, ids)
        assert scored.token_ids == [] and scored.text == "" and scored.finish_reason == "length"
        assert scored.prompt_logprobs[0] is None and len(scored.prompt_logprobs) == len(ids)
        for k, e in enumerate(scored.prompt_logprobs[1:], start=1):
            assert e.token_id == ids[k] and e.logprob == pytest.approx(ref[k - 1, ids[k]].item(), abs=1e-4)
            assert [t for t, _ in e.top] == ref[k - 1].topk(2).indices.tolist()
        assert [e.logprob for e in single.prompt_logprobs[1:]] == pytest.approx(
            [e.logprob for e in scored.prompt_logprobs[1:]], abs=1e-4
        )
    assert out[2].completion_tokens > 0
    with pytest.raises(ValueError, match="text-only"):
        image = Generator(*tiny).requests([Prompt.single("hi", [Image.new("RGB", (32, 32))])], GenerationConfig())[0]
        image.prompt_logprobs = 1
        GenerationEngine(*tiny).submit(image)


def test_seeded_top_k_one_is_greedy_and_top_k_changes_samples(tiny):
    greedy = GenerationEngine(*tiny).run([_text_request(tiny)])[0].token_ids
    k1 = GenerationEngine(*tiny).run([_text_request(tiny, temperature=1.5, top_k=1, seed=3)])[0].token_ids
    assert k1 == greedy

    def sampled(k):
        return GenerationEngine(*tiny).run([_text_request(tiny, temperature=1.5, top_k=k, seed=3)])[0].token_ids

    assert sampled(5) == sampled(5) and sampled(0) == sampled(0)


def test_raw_completion_keeps_whitespace_and_ignores_template_stops():
    pieces = [" ", "a", "###", " b", " "]
    chat = TextStream(lambda ids: "".join(pieces[i] for i in ids), set(), ["###"])
    raw = TextStream(lambda ids: "".join(pieces[i] for i in ids), set(), [], strip=False)
    deltas: list[str] = []
    raw.on_delta = deltas.append
    assert chat.push([0, 1, 2]) and chat.finish() == "a"
    for t in range(1, 6):
        assert not raw.push(list(range(t)))
        raw.flush()
    assert raw.finish() == " a### b " and "".join(deltas) == " a### b "


def test_template_stops_end_chat_replies_only(tiny):
    raw = GenerationEngine(*tiny).run([_text_request(tiny, chat=False, max_new_tokens=12)])[0]
    stop = next(raw.text[i : i + 2] for i in range(1, len(raw.text) - 2) if raw.text[i : i + 2].strip())
    for chat, ends in ((False, False), (True, True)):
        engine = GenerationEngine(*tiny)
        engine.template_stops = [stop]  # as if the chat template ended its turns with it
        c = engine.run([_text_request(tiny, chat=chat, max_new_tokens=12)])[0]
        assert (stop not in c.text) == ends and (c.finish_reason == "stop") == ends


def test_raw_completion_text_continues_the_prompt(tiny):
    engine = GenerationEngine(*tiny)
    engine._decode_text = lambda ids: " ".join(f"w{i}" for i in ids)  # like SentencePiece: no space before word 1
    c = engine.run([_text_request(tiny, chat=False, max_new_tokens=3)])[0]
    assert c.text == "".join(f" w{t}" for t in c.token_ids if t not in engine.eos)  # the space after the prompt kept
    chat = engine.run([_text_request(tiny, max_new_tokens=3)])[0]
    assert chat.text == " ".join(f"w{t}" for t in chat.token_ids if t not in engine.eos)
