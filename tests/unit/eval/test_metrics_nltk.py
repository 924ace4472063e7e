"""scitune's BLEU-n and Google-BLEU against nltk's own functions, called the way ScienceQA and HF ``google_bleu``
call them, on random and edge-case sentence pairs (bit-exact)."""

from __future__ import annotations

import math
import random
import warnings
from collections import Counter

import pytest
from nltk.translate.bleu_score import sentence_bleu
from nltk.translate.gleu_score import corpus_gleu, sentence_gleu

from scitune.eval.metrics import bleu_n, google_bleu, scienceqa_tokenize, sentence_bleu_tokens, tokenize_13a

VOCAB = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran.", "Fig.", "1.5", "GeV", "(b)", "and", ","]


def _sentence(rng: random.Random, max_len: int = 12) -> str:
    # a small vocabulary makes repeated words and partial overlaps common
    return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(0, max_len)))


def _pairs(seed: int, count: int) -> list[tuple[list[str], str]]:
    rng = random.Random(seed)
    pairs = [([_sentence(rng) for _ in range(rng.randint(1, 3))], _sentence(rng)) for _ in range(count)]
    edge = [
        (["the cat sat on the mat"], ""),  # empty hypothesis
        ([""], "the cat"),  # empty reference
        ([""], ""),
        (["the cat sat on the mat"], "dog ran"),  # no overlap at all
        (["the cat sat on the mat"], "the the the the the the"),  # repeated words: clipped counts
        (["the cat sat on the mat", "a cat sat on a mat"], "a cat sat on the mat"),  # several references
        (["a b c d e", "a b"], "a b"),  # the closest reference length wins
        (["a b c", "a b c d e"], "a b c d"),  # equally close: the shorter one
        (["the cat"], "the cat sat on the mat and the dog ran"),  # longer than the reference: no brevity penalty
        (["Fig. 1.5 GeV."], "Fig 1 5 GeV"),  # periods split tokens
        (["one"], "one"),
    ]
    return edge + pairs


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_bleu_n_is_nltk_sentence_bleu_with_scienceqa_tokens(n):
    weights = (1.0 / n,) * n
    for refs, hyp in _pairs(seed=n, count=150):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nltk warns about orders without a match
            expected = sentence_bleu([scienceqa_tokenize(r) for r in refs], scienceqa_tokenize(hyp), weights)
        got = bleu_n(refs if len(refs) > 1 else refs[0], hyp, n)
        assert got == expected, (refs, hyp, n)  # bit-exact
        assert isinstance(got, float)


def test_bleu_n_is_silent_and_keeps_nltk_edge_values():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nltk's "0 counts of n-gram overlaps" warning must not escape
        assert bleu_n("the cat sat on the mat", "", 4) == 0.0
        assert bleu_n("the cat sat on the mat", "dog", 1) == 0.0
        tiny = bleu_n("the cat sat on the mat", "the cat on the mat", 4)
    assert 0 < tiny < 1e-70  # an order without matches: sys.float_info.min precision, as nltk
    with pytest.raises(ValueError, match="at least one reference"):
        sentence_bleu_tokens([], ["a"], (1.0,))
    with pytest.raises(ValueError, match="n must be"):
        bleu_n("a", "a", 0)


def test_bleu_weights_are_uniform_not_nltk_default():
    # nltk's default weights are 4-gram; BLEU-1 must weigh unigrams alone (ScienceQA's bleu1)
    ref, hyp = "the cat sat on the mat", "the cat on mat the"
    assert bleu_n(ref, hyp, 1) == pytest.approx(math.exp(1 - 6 / 5))
    assert bleu_n(ref, hyp, 1) != bleu_n(ref, hyp, 4)


def _gleu_by_hand(hyp: list[str], ref: list[str], lo: int = 1, hi: int = 4) -> float:
    grams = [Counter(tuple(t[i : i + n]) for n in range(lo, hi + 1) for i in range(len(t) - n + 1)) for t in (hyp, ref)]
    total = max(sum(grams[0].values()), sum(grams[1].values()))
    return sum((grams[0] & grams[1]).values()) / total if total else 0.0


def test_google_bleu_is_nltk_gleu_with_13a_tokens():
    for refs, hyp in _pairs(seed=7, count=200):
        ref_tokens = [tokenize_13a(r) for r in refs]
        expected = sentence_gleu(ref_tokens, tokenize_13a(hyp))
        assert google_bleu(hyp, refs if len(refs) > 1 else refs[0]) == expected, (refs, hyp)
        assert expected == corpus_gleu([ref_tokens], [tokenize_13a(hyp)])  # HF google_bleu, one caption
        # independent check: matches / max(hyp n-grams, ref n-grams) of the best reference
        assert google_bleu(hyp, refs) == pytest.approx(max(_gleu_by_hand(tokenize_13a(hyp), r) for r in ref_tokens))


def test_google_bleu_orders_and_references():
    assert google_bleu("the cat sat", "the cat sat", min_len=2, max_len=2) == 1.0
    assert google_bleu("the cat", "the dog", min_len=1, max_len=1) == 0.5
    assert google_bleu("the cat", "the dog", min_len=2, max_len=2) == 0.0
    assert google_bleu("a cat", []) == 0.0  # no reference: nothing to match
    assert google_bleu("", "") == 0.0
    assert isinstance(google_bleu("a", "a"), float)
