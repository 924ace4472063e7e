"""Text metrics against hand-computed values on tiny strings (and against nltk / rouge where installed)."""

from __future__ import annotations

import json
import math
import warnings

import pytest

from conftest import SHARED_DATA
from scitune.eval.metrics import (
    bleu_n,
    bow_cosine,
    caption_scores,
    first_sentence,
    google_bleu,
    mean_std,
    rouge_l,
    rouge_l_scienceqa,
    sacrebleu_corpus,
    sacrebleu_sentence,
    scienceqa_tokenize,
    similarity_scorer,
)

REF = "the cat sat on the mat"
HYP = "the cat sat on a mat"


def test_scienceqa_tokenize_splits_whitespace_and_periods():
    assert scienceqa_tokenize("Hello  world. It's 1.5 m.\n") == ["Hello", "world", "It's", "1", "5", "m"]


def test_bleu_n_hand_computed():
    # HYP vs REF: clipped precisions 5/6, 3/5, 2/4, 1/3; equal lengths so no brevity penalty
    assert bleu_n(REF, HYP, 1) == pytest.approx(5 / 6)
    assert bleu_n(REF, HYP, 2) == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert bleu_n(REF, HYP, 4) == pytest.approx((5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    assert bleu_n(REF, REF, 4) == 1.0


def test_bleu_n_brevity_penalty_and_zero_orders():
    hyp = "the cat on the mat"  # 5 tokens vs 6: BP = exp(1 - 6/5); unigrams all match; bigrams 3/4
    assert bleu_n(REF, hyp, 1) == pytest.approx(math.exp(-0.2))
    assert bleu_n(REF, hyp, 2) == pytest.approx(math.exp(-0.2) * math.sqrt(3 / 4))
    # no 4-gram matches: nltk's unsmoothed BLEU is ~0 (sys.float_info.min precision), not exactly 0
    assert 0 < bleu_n(REF, hyp, 4) < 1e-70
    assert bleu_n(REF, "dog", 1) == 0.0
    assert bleu_n(REF, "", 4) == 0.0


def test_bleu_n_period_tokenization_and_multiple_references():
    assert bleu_n("The cat.", "The cat", 1) == 1.0
    assert bleu_n(["a b c", "a b"], "a b", 2) == 1.0  # the closest reference length (2) is used


def test_bleu_n_matches_nltk_sentence_bleu():
    nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")
    path = SHARED_DATA / "scienceqa" / "problems_trainval_sample.json"
    if not path.exists():
        pytest.skip("shared ScienceQA sample not found")
    problems = list(json.loads(path.read_text()).values())[:12]
    pairs = [
        (a["lecture"] + " " + a["solution"], b["lecture"] + " " + b["solution"]) for a, b in zip(problems, problems[1:])
    ]
    pairs += [(REF, HYP), (REF, "the cat on the mat"), (REF, "mat")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns about n-gram orders with no match
        for ref, hyp in pairs:
            for n, weights in ((1, (1.0,)), (4, (0.25,) * 4)):
                expected = nltk_bleu.sentence_bleu([scienceqa_tokenize(ref)], scienceqa_tokenize(hyp), weights)
                assert bleu_n(ref, hyp, n) == expected  # bit-exact


def test_google_bleu_hand_computed():
    # n-grams of orders 1..4: 18 in each; matches 5 + 3 + 2 + 1 = 11
    assert google_bleu(HYP, REF) == pytest.approx(11 / 18)
    assert google_bleu("A cat.", "A cat.") == 1.0
    assert google_bleu("dog", REF) == 0.0
    assert google_bleu(HYP, ["dog", REF]) == pytest.approx(11 / 18)  # the best reference wins


def test_google_bleu_matches_nltk_gleu():
    gleu = pytest.importorskip("nltk.translate.gleu_score")
    from scitune.eval.metrics import tokenize_13a

    for hyp, ref in [
        (HYP, REF),
        ("Packet drop rate for each method.", "Bar Chart Packet drop rate, per method (1.5%)."),
    ]:
        assert google_bleu(hyp, ref) == gleu.corpus_gleu([[tokenize_13a(ref)]], [tokenize_13a(hyp)])


def test_rouge_l_hand_computed():
    assert rouge_l(HYP, REF) == pytest.approx(5 / 6)  # LCS 5 of 6 both ways
    assert rouge_l("The Cat!", "the cat") == pytest.approx(1.0)  # lower-cased, punctuation dropped
    assert rouge_l("dog", REF) == 0.0


def test_rouge_l_scienceqa_uses_rouge_package_semantics():
    pytest.importorskip("rouge")
    # gold is passed as the "hypothesis": distinct words, gold {the,cat,sat,on,mat}=5, generated 6; union LCS 5
    # -> P = 5/5, R = 5/6, F = 2PR / (P + R + 1e-8)
    p, r = 1.0, 5 / 6
    assert rouge_l_scienceqa(HYP, REF) == pytest.approx(2 * p * r / (p + r + 1e-8))


def test_sacrebleu_hand_computed():
    assert sacrebleu_sentence(REF, REF) == pytest.approx(100.0)
    # corpus counts: 1-grams 7/8, 2-grams 4/6, 3-grams 2/4, 4-grams 1/3; lengths 8 vs 8
    assert sacrebleu_corpus([HYP, "a dog"], [REF, "a dog"]) == pytest.approx(
        100 * (7 / 8 * 4 / 6 * 2 / 4 * 1 / 3) ** 0.25
    )
    with pytest.raises(ValueError, match="pair up"):
        sacrebleu_corpus([HYP], [])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Graph Plot The energy at P=1.5 GeV/c. Second sentence.", "Graph Plot The energy at P=1.5 GeV/c."),
        ("  One line\nnext line", "One line"),
        ("Is it? Yes.", "Is it?"),
        ("no terminator", "no terminator"),
        ("", ""),
    ],
)
def test_first_sentence(text, expected):
    assert first_sentence(text) == expected


def test_mean_std_sample_std():
    assert mean_std([1, 2, 3, 4]) == pytest.approx({"mean": 2.5, "std": math.sqrt(5 / 3)})
    assert mean_std([0.5]) == {"mean": 0.5, "std": None}
    assert mean_std([]) == {"mean": None, "std": None}


def test_caption_scores_hand_computed():
    s = caption_scores([HYP, "a dog"], [REF, "a dog"])
    assert s["count"] == 2
    assert s["bleu"] == pytest.approx({"mean": (11 / 18 + 1) / 2, "std": (1 - 11 / 18) / math.sqrt(2)})
    assert s["rouge_l"] == pytest.approx({"mean": (5 / 6 + 1) / 2, "std": (1 - 5 / 6) / math.sqrt(2)})
    assert s["sacrebleu_corpus"] == pytest.approx(100 * (7 / 8 * 4 / 6 * 2 / 4 * 1 / 3) ** 0.25)


def test_bow_cosine_hand_computed():
    assert bow_cosine("a b", "a c") == pytest.approx(0.5)
    assert bow_cosine("Hello, world!", "hello world") == pytest.approx(1.0)
    assert bow_cosine("a a b", "a") == pytest.approx(2 / math.sqrt(5))
    assert bow_cosine("", "a") == 0.0


def test_similarity_scorer_names():
    assert similarity_scorer("bow-cosine") is bow_cosine
    with pytest.raises(KeyError, match="bow-cosine"):
        similarity_scorer("nope")
