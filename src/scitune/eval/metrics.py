"""Text metrics matching the official scorers: BLEU-n and Google-BLEU (nltk), sacreBLEU, ROUGE-L, caption scores
(SciTune Table 2, mean ± std) and sentence similarity. Optional libraries (sacrebleu, rouge-score, rouge,
sentence-transformers) are imported on first use."""

from __future__ import annotations

import math
import re
import statistics
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

__all__ = [
    "SimilarityFn",
    "SentenceTransformerSimilarity",
    "bleu_n",
    "bow_cosine",
    "caption_scores",
    "first_sentence",
    "google_bleu",
    "mean_std",
    "rouge_l",
    "rouge_l_scienceqa",
    "sacrebleu_corpus",
    "sacrebleu_sentence",
    "scienceqa_tokenize",
    "sentence_bleu_tokens",
    "similarity_scorer",
    "tokenize_13a",
]

SimilarityFn = Callable[[str, str], float]
"""A sentence-similarity function ``(text_a, text_b) -> score``."""


# --------------------------------------------------------------------------------------------------------------------
# BLEU-n through nltk's ``sentence_bleu`` (what ScienceQA's tools/evaluations.py calls)
# --------------------------------------------------------------------------------------------------------------------
def scienceqa_tokenize(text: str) -> list[str]:
    """Split on whitespace and periods and drop empty pieces (ScienceQA ``tools/evaluations.py::tokenize``)."""
    return [t for t in re.split(r"\s|\.", text) if t]


def sentence_bleu_tokens(
    references: Sequence[Sequence[str]], hypothesis: Sequence[str], weights: Sequence[float]
) -> float:
    """Sentence BLEU of token lists: nltk's ``sentence_bleu`` with its defaults (no smoothing: "method0").

    Clipped n-gram precisions, brevity penalty against the closest reference length (ties go to the shorter one),
    0.0 when no unigram matches, and an order with zero matches contributes ``sys.float_info.min`` as its precision
    (so the score is ~0 but not exactly 0). nltk's warning about such orders is silenced: ScienceQA scores them so.
    """
    from nltk.translate.bleu_score import sentence_bleu

    if not references:
        raise ValueError("sentence_bleu_tokens: at least one reference is required")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\nThe hypothesis contains 0 counts", category=UserWarning)
        score = sentence_bleu([list(r) for r in references], list(hypothesis), tuple(weights))
    return float(score)  # nltk returns the int 0 when no unigram matches


def bleu_n(
    reference: str | Sequence[str],
    hypothesis: str,
    n: int,
    tokenize: Callable[[str], list[str]] = scienceqa_tokenize,
) -> float:
    """BLEU-n in [0, 1] with uniform weights ``(1/n,) * n``, as ScienceQA scores explanations (n = 1 and 4).

    Args:
        reference: the gold text, or several gold texts.
        hypothesis: the generated text.
        n: the highest n-gram order (1..4 in ScienceQA).
        tokenize: text → tokens; ScienceQA's whitespace/period split by default.
    """
    if n < 1:
        raise ValueError(f"bleu_n: n must be >= 1, got {n}")
    refs = [reference] if isinstance(reference, str) else list(reference)
    return sentence_bleu_tokens([tokenize(r) for r in refs], tokenize(hypothesis), (1.0 / n,) * n)


# --------------------------------------------------------------------------------------------------------------------
# Google-BLEU (what SciTune reports as "BLEU" for captions: HF evaluate "google_bleu", one caption at a time)
# --------------------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _tokenizer_13a() -> Callable[[str], str]:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()


def tokenize_13a(text: str) -> list[str]:
    """sacreBLEU's ``13a`` (mteval-v13a) tokenization, the default of sacreBLEU and HF ``google_bleu``."""
    return _tokenizer_13a()(text).split()


def google_bleu(prediction: str, references: str | Sequence[str], min_len: int = 1, max_len: int = 4) -> float:
    """Sentence Google-BLEU (GLEU) in [0, 1]: matched n-grams / max(hyp n-grams, ref n-grams), orders 1..4.

    nltk's ``sentence_gleu`` on 13a tokens, which is what
    ``evaluate.load("google_bleu").compute(predictions=[prediction], references=[references])`` computes; with
    several references the best-scoring one is used.
    """
    from nltk.translate.gleu_score import sentence_gleu

    refs = [references] if isinstance(references, str) else list(references)
    return float(sentence_gleu([tokenize_13a(r) for r in refs], tokenize_13a(prediction), min_len, max_len))


# --------------------------------------------------------------------------------------------------------------------
# sacreBLEU (the standard, reproducible corpus BLEU; 0–100 scale)
# --------------------------------------------------------------------------------------------------------------------
def sacrebleu_corpus(predictions: Sequence[str], references: Sequence[str]) -> float:
    """sacreBLEU corpus BLEU (0–100, default 13a tokenization, no smoothing beyond sacreBLEU's 'exp')."""
    import sacrebleu

    _check_lengths(predictions, references)
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def sacrebleu_sentence(prediction: str, reference: str | Sequence[str]) -> float:
    """sacreBLEU sentence BLEU (0–100, sacreBLEU's default add-one 'exp' smoothing for sentences)."""
    import sacrebleu

    refs = [reference] if isinstance(reference, str) else list(reference)
    return float(sacrebleu.sentence_bleu(prediction, refs).score)


# --------------------------------------------------------------------------------------------------------------------
# ROUGE-L
# --------------------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _rouge_l_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure in [0, 1] from ``rouge-score`` (no stemming): what HF ``evaluate.load("rouge")`` returns
    as ``rougeL`` for one pair, i.e. SciTune's caption ROUGE."""
    return float(_rouge_l_scorer().score(reference, prediction)["rougeL"].fmeasure)


def rouge_l_scienceqa(prediction: str, reference: str) -> float:
    """ROUGE-L as ScienceQA's ``tools/evaluations.py`` computes it, with the ``rouge`` package (pltrdy).

    That scorer calls ``Rouge(metrics=["rouge-l"]).get_scores(target, prediction)`` — gold first — and its
    summary-level LCS differs from ``rouge-score``. Needs ``pip install rouge``; both texts must be non-empty.
    """
    from scitune.extras import load

    Rouge = load("ScienceQA's ROUGE-L (the 'rouge' package)", "rouge").Rouge
    return float(Rouge(metrics=["rouge-l"]).get_scores(reference, prediction, avg=True)["rouge-l"]["f"])


# --------------------------------------------------------------------------------------------------------------------
# Captions (SciTune §3.1.2, Table 2)
# --------------------------------------------------------------------------------------------------------------------
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` (SciTune takes it as the generated caption).

    The text is stripped; the sentence ends at the first newline or at the first ``.``, ``!`` or ``?`` that is followed
    by whitespace or the end (the mark is kept), so "1.5 GeV" does not end a sentence but "e.g. x" does.
    """
    text = text.strip()
    m = _SENTENCE_END.search(text)
    return text if m is None else text[: m.end()].strip()


def mean_std(values: Sequence[float]) -> dict[str, float | None]:
    """``{"mean", "std"}`` with the sample standard deviation (ddof=1, as pandas' ``.std()`` that SciTune used);
    ``None`` where undefined (no values for the mean, fewer than two for the std)."""
    vals = [float(v) for v in values]
    return {
        "mean": statistics.fmean(vals) if vals else None,
        "std": statistics.stdev(vals) if len(vals) > 1 else None,
    }


def caption_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Caption quality as SciTune Table 2 reports it: per-caption BLEU and ROUGE-L, mean ± std.

    "bleu" is sentence Google-BLEU and "rouge_l" is rouge-score's ROUGE-L F — what the SciTune authors computed with
    HF ``evaluate`` (``google_bleu``, ``rouge``) one caption at a time. sacreBLEU corpus BLEU (0–100) is added as the
    standard comparable number. Callers pass already extracted captions (see `first_sentence`).
    """
    _check_lengths(predictions, references)
    bleus = [google_bleu(p, r) for p, r in zip(predictions, references)]
    rouges = [rouge_l(p, r) for p, r in zip(predictions, references)]
    return {
        "count": len(bleus),
        "bleu": mean_std(bleus),
        "rouge_l": mean_std(rouges),
        "sacrebleu_corpus": sacrebleu_corpus(predictions, references) if bleus else None,
    }


def _check_lengths(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references; they must pair up")


# --------------------------------------------------------------------------------------------------------------------
# Sentence similarity (ScienceQA's official one is all-MiniLM-L6-v2 cosine; the default here is model-free)
# --------------------------------------------------------------------------------------------------------------------
_WORD = re.compile(r"[a-z0-9]+")


def bow_cosine(text_a: str, text_b: str) -> float:
    """``bow-cosine``: cosine of bag-of-words count vectors (lower-cased ``[a-z0-9]+`` tokens); 0.0 if either is empty.

    Deterministic and model-free; a stand-in for ScienceQA's sentence-transformers similarity, not equal to it.
    """
    a, b = Counter(_WORD.findall(text_a.lower())), Counter(_WORD.findall(text_b.lower()))
    if not a or not b:
        return 0.0
    dot = sum(c * b[w] for w, c in a.items())
    return dot / (math.sqrt(sum(c * c for c in a.values())) * math.sqrt(sum(c * c for c in b.values())))


bow_cosine.name = "bow-cosine"  # type: ignore[attr-defined]


class SentenceTransformerSimilarity:
    """Cosine of sentence-transformers embeddings, as ScienceQA's ``tools/evaluations.py`` (``util.pytorch_cos_sim``).

    Optional: needs ``sentence-transformers`` and the model available locally (no download happens in tests).
    """

    def __init__(self, model_name: str = "sentence-transformers/all-MiniLM-L6-v2", device: str | None = None) -> None:
        from scitune.extras import load

        SentenceTransformer = load("--similarity sentence-transformers", "sentence_transformers").SentenceTransformer
        self.name = f"sentence-transformers:{model_name}"
        self._model = SentenceTransformer(model_name, device=device)

    def __call__(self, text_a: str, text_b: str) -> float:
        from sentence_transformers import util

        emb_a = self._model.encode(text_a, convert_to_tensor=True)
        emb_b = self._model.encode(text_b, convert_to_tensor=True)
        return float(util.pytorch_cos_sim(emb_a, emb_b).item())


def similarity_scorer(name: str = "bow-cosine") -> SimilarityFn:
    """Return a similarity function by name: ``bow-cosine`` or ``sentence-transformers[:MODEL]``."""
    if name == "bow-cosine":
        return bow_cosine
    if name == "sentence-transformers" or name.startswith("sentence-transformers:"):
        _, _, model = name.partition(":")
        return SentenceTransformerSimilarity(model) if model else SentenceTransformerSimilarity()
    raise KeyError(f"unknown similarity {name!r}; known: bow-cosine, sentence-transformers[:MODEL]")
