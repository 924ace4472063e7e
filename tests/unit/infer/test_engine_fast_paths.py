"""The engine's fast paths change no result: `text_decoder` gives exactly ``tokenizer.decode``'s text (a tokenizer
class with its own decoding keeps it), and `prefill_groups` splits an admission into groups of similar prompt length
whose rows get the same tokens as alone, in one counted prefill."""

from __future__ import annotations

import random

from scitune.infer.engine import GenerationEngine, GenerationRequest, prefill_groups
from scitune.infer.stream import text_decoder
from scitune.loader import tiny_vlm
from scitune.model.builders import tiny_tokenizer


def test_fast_path_matches_tokenizer_decode():
    tok = tiny_tokenizer()
    decode = text_decoder(tok)
    assert "backend" in decode.__code__.co_freevars  # the Rust tokenizer is called directly
    rng = random.Random(0)
    for _ in range(300):  # special tokens, partial UTF-8 byte tokens and spaces included
        ids = [rng.randrange(len(tok)) for _ in range(rng.randrange(0, 40))]
        assert decode(ids) == tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def test_a_tokenizer_with_its_own_decode_keeps_it():
    tok = tiny_tokenizer()

    class Custom(type(tok)):
        def _decode(self, token_ids, **kwargs):
            return "custom:" + super()._decode(token_ids, **kwargs)

    tok.__class__ = Custom
    assert text_decoder(tok)([5, 6]).startswith("custom:")


def _req(n: int, start: int = 5) -> GenerationRequest:
    return GenerationRequest([0] + [start + i % 50 for i in range(n - 1)], max_new_tokens=6, chat=False)


def test_prefill_groups_keep_padding_under_the_limit():
    reqs = [_req(n) for n in (126, 135, 124, 159, 126, 146, 126, 134)]
    groups = prefill_groups(reqs)
    assert [[len(r.input_ids) for r in g] for g in groups] == [[124, 126, 126, 126, 134, 135], [146, 159]]
    for g in groups:
        lens = [len(r.input_ids) for r in g]
        assert len(g) * max(lens) - sum(lens) <= 0.1 * len(g) * max(lens)
    assert prefill_groups(reqs[:1]) == [reqs[:1]] and prefill_groups([]) == []
    assert len(prefill_groups([_req(10) for _ in range(4)])) == 1  # equal lengths: one group
    assert [len(g) for g in prefill_groups(reqs, limit=1.0)] == [8]  # no limit: the old single prefill


def test_rows_prefilled_in_groups_get_their_tokens_alone():
    model, proc = tiny_vlm()
    lengths = (3, 40, 4, 90, 41)
    alone = [GenerationEngine(model, proc).run([_req(n, 7 + n)])[0].token_ids for n in lengths]
    reqs = [_req(n, 7 + n) for n in lengths]
    assert [[len(r.input_ids) for r in g] for g in prefill_groups(reqs)] == [[3], [4], [40, 41], [90]]
    engine = GenerationEngine(model, proc, max_batch_size=8)
    together = engine.run(reqs)
    assert [c.token_ids for c in together] == alone
    assert engine.stats.prefills == 1 and engine.stats.max_batch_rows == 5
