"""The token bound is never below the tokenizer's count and the word count equals it, over random texts and
tokenizers of the kinds models ship; the record checker's verdicts and lengths agree with `check_record` under every
chat template."""

from __future__ import annotations

import random

import pytest
from PIL import Image
from tokenizer_kinds import KINDS, random_text

from scitune.data.dataset import check_record
from scitune.data.record_check import RecordChecker
from scitune.data.token_count import TokenCounter
from scitune.io import DataError
from scitune.model.builders import TINY_CHAT_TEMPLATE
from scitune.processor import ImageTokenRule, Processor, prepare_tokenizer

COUNTABLE = {"llama", "metaspace-first", "metaspace-always-split"}
"""Kinds whose tokens are the sum of their words' tokens (the exact count applies)."""


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_bound_is_never_below_and_count_is_exact(kind):
    tok = prepare_tokenizer(KINDS[kind]())
    counter = TokenCounter(tok)
    assert counter.can_bound and counter.never_drops
    assert counter.can_count == (kind in COUNTABLE)
    rng = random.Random(kind)
    for _ in range(1500):
        text = random_text(rng, rng.randint(1, 80))
        true = len(tok(text, add_special_tokens=False)["input_ids"])
        assert counter.bound(text) >= true, text
        if counter.can_count:
            assert counter.exact(text) == true, text


def test_a_tokenizer_without_a_backend_is_never_counted():
    class Slow:
        def get_vocab(self):
            return {}

    counter = TokenCounter(Slow())
    assert not counter.can_bound and not counter.can_count


def _record(rng: random.Random, image: bool) -> dict:
    def text() -> str:
        return rng.choice(["", " ", "\n", random_text(rng, rng.randint(0, 30))])

    turns = []
    for _ in range(rng.randint(1, 3)):
        turns += [{"from": "human", "value": text()}, {"from": "gpt", "value": text()}]
    rec = {"id": f"r{rng.randrange(10**6)}", "conversations": turns}
    if rng.random() < 0.2:
        rec["system"] = text()
    if image:
        rec["image"] = "im.png"
        first = turns[0]["value"]
        turns[0]["value"] = f"<image>\n{first}" if rng.random() < 0.5 else f"{first}<image>"
    if rng.random() < 0.05:  # a structural problem now and then
        turns[-1]["from"] = "human"
    return rec


@pytest.mark.parametrize("template", ["scitune", "vicuna-v1", "plain", "llava-v0", "llava-v0-simple", "chat-template"])
@pytest.mark.parametrize("kind", ["byte-level", "llama", "metaspace-first", "wordpiece"])
def test_record_verdicts_and_lengths_agree_with_check_record(kind, template, tmp_path):
    tok = KINDS[kind]()
    tok.chat_template = TINY_CHAT_TEMPLATE
    processor = Processor(tok, None, template, ImageTokenRule(5))
    Image.new("RGB", (8, 8), "red").save(tmp_path / "im.png")
    from scitune.data.conversation import Message

    bare = len(processor.encode([Message("user", "<image>"), Message("assistant", "")], [(8, 8)]))
    max_length = bare + 60  # some records are longer: their problem must read the same
    checker = RecordChecker(processor, tmp_path, max_length)
    assert checker.whole_text is not None
    checker._checks = {True: 0, False: 0}  # no self-check: the counts themselves are under test
    rng = random.Random(f"{kind}-{template}")
    for _ in range(120):
        rec = _record(rng, image=rng.random() < 0.6)
        try:
            want = len(check_record(rec, processor, tmp_path, max_length).encoded)
        except (ValueError, DataError) as e:
            with pytest.raises((ValueError, DataError)) as got:
                checker.check(rec)
            assert str(got.value) == str(e)
            continue
        n, exact = checker.check(rec)
        assert n == want if exact else want <= n <= max_length, rec
    counted = checker.n_exact + checker.n_bound
    assert checker.n_bound > 0 and counted > 0
