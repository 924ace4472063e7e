"""Raw image/caption pairs -> LLaVA stage-1 (align) records, through LLaVA's noun-phrase frequency filter.

Reads CC3M's TSV (``caption<TAB>url`` or ``caption<TAB>image path``), a folder of images with same-named ``.txt``
captions (img2dataset's layout) or a LAION-style parquet file (url/caption or image/caption columns)."""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scitune.config.schema import DEFAULT_IMAGE_TOKEN
from scitune.io import DataError, check_input_file, iter_text_lines, read_json, read_text, write_json
from scitune.sources.converters.base import CONVERTERS
from scitune.sources.converters.reading import write_record_file

__all__ = [
    "BRIEF_INSTRUCTIONS",
    "CaptionPair",
    "CaptionPairsConverter",
    "PhraseFilterResult",
    "filter_by_noun_phrases",
    "load_instructions",
    "load_spacy",
    "noun_phrases",
    "read_caption_pairs",
    "stage1_records",
    "word_phrases",
]

BRIEF_INSTRUCTIONS = (
    "Describe this image in a few words.",
    "Give a short description of the picture.",
    "Write a one-sentence caption for this image.",
    "What does this picture show? Answer briefly.",
    "Sum up the image in a short sentence.",
    "Caption the photo concisely.",
    "Briefly say what is in the image.",
    "Provide a quick summary of what the image shows.",
    "Tell me in one line what this picture is about.",
    "Write a short, clear caption for the image.",
    "Give a compact description of the main content of this photo.",
    "In brief, what can be seen in this image?",
)
"""scitune's own short requests for a brief description (the idea of LLaVA's Table 8 list, in our wording); LLaVA's
released list can be used instead with ``--instructions``."""

IMAGE_TOKEN = DEFAULT_IMAGE_TOKEN
SPACY_MODEL = "en_core_web_sm"
EXTRACTORS = ("spacy", "words")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
_CAPTION_COLUMNS = ("caption", "text", "TEXT", "Caption")
_IMAGE_COLUMNS = ("image", "image_path", "url", "URL", "path")


@dataclass(frozen=True)
class CaptionPair:
    """One raw pair: a stable id, the image (local path or URL) and its caption."""

    id: str
    image: str
    caption: str


# ---------------------------------------------------------------------------------------------------------- reading
def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _read_tsv(path: Path) -> Iterator[tuple[str, str, str]]:
    """(where, caption, image) per line of a CC3M-style TSV; a first line ``caption<TAB>url`` is a header."""
    for lineno, line in iter_text_lines(path):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or not parts[1].strip():
            raise DataError(f"{path}:{lineno}: expected 'caption<TAB>url' or 'caption<TAB>image path'")
        if (
            lineno == 1
            and parts[0].strip().lower() in ("caption", "text")
            and parts[1].strip().lower()
            in (
                "url",
                "image",
                "image_path",
            )
        ):
            continue
        yield f"{path}:{lineno}", parts[0], parts[1].strip()


def _read_folder(path: Path) -> Iterator[tuple[str, str, str]]:
    """(where, caption, image) per image with a same-stem ``.txt`` beside it (sorted; images without one skipped)."""
    for img in sorted(p for p in path.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file()):
        txt = img.with_suffix(".txt")
        if txt.is_file():
            yield str(txt), read_text(txt), str(img.relative_to(path))


def _read_parquet(path: Path) -> Iterator[tuple[str, str, str]]:
    """(where, caption, image) per row of a LAION-style parquet file (url/caption or image/caption columns)."""
    from scitune.extras import require

    require("scitune convert caption-pairs (parquet input)", "pyarrow")
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    names = table.column_names
    cap = next((c for c in _CAPTION_COLUMNS if c in names), None)
    img = next((c for c in _IMAGE_COLUMNS if c in names), None)
    if cap is None or img is None:
        raise DataError(f"{path}: needs a caption column ({'/'.join(_CAPTION_COLUMNS)}) and an image column "
                        f"({'/'.join(_IMAGE_COLUMNS)}); it has {names}")  # fmt: skip
    for i, (c, u) in enumerate(zip(table.column(cap).to_pylist(), table.column(img).to_pylist())):
        if not isinstance(u, str) or not u.strip():
            raise DataError(f"{path}: row {i}: column {img!r} is empty")
        yield f"{path}: row {i}", c if isinstance(c, str) else "", u.strip()


def read_caption_pairs(src: str | os.PathLike[str], id_prefix: str = "") -> tuple[list[CaptionPair], int]:
    """Read every pair of ``src``; returns the pairs and how many had an empty caption (skipped).

    Ids are ``<id_prefix><row:09d>`` (row = 0-based pair index, as img2dataset numbers its files) for TSV and parquet
    input, and the image's path without suffix for a folder.
    """
    path = Path(src)
    if path.is_dir():
        rows, from_folder = _read_folder(path), True
    else:
        check_input_file(path, "source file")
        rows = _read_parquet(path) if path.suffix == ".parquet" else _read_tsv(path)
        from_folder = False
    pairs, empty = [], 0
    for _where, caption, image in rows:
        caption = " ".join(caption.split())
        if not caption:
            empty += 1
            continue
        ident = (
            os.path.splitext(image)[0].replace(os.sep, "/") if from_folder else f"{id_prefix}{len(pairs) + empty:09d}"
        )
        pairs.append(CaptionPair(ident, image, caption))
    if not pairs:
        raise DataError(f"{src}: no image/caption pairs found")
    return pairs, empty


# ---------------------------------------------------------------------------------------------------------- phrases
PhraseExtractor = Callable[[Sequence[str]], list[list[str]]]
"""Captions -> the noun phrases of each (lower-cased)."""


def load_spacy(model: str = SPACY_MODEL) -> Any:
    """spaCy's pipeline ``model`` (a package name or a folder) with the parts noun chunks need.

    Raises:
        MissingExtra: spaCy or the model is not installed; the message says how to install it.
    """
    from scitune.extras import MissingExtra, load

    spacy = load("scitune convert caption-pairs", "spacy")
    try:
        return spacy.load(model, exclude=["ner", "lemmatizer", "textcat"])
    except OSError as e:
        hint = f"python -m spacy download {model}" if not Path(model).exists() else "a spaCy pipeline folder"
        raise MissingExtra(
            f"spaCy model {model!r} is not installed (noun phrases need it): {hint}, or --extractor words "
            "for the model-free approximation",
            name=model,
        ) from e


def noun_phrases(nlp: Any, captions: Sequence[str], batch_size: int = 256) -> list[list[str]]:
    """spaCy noun chunks of each caption, lower-cased and whitespace-normalised (LLaVA's phrases)."""
    out = []
    for doc in nlp.pipe(captions, batch_size=batch_size):
        out.append([" ".join(chunk.text.lower().split()) for chunk in doc.noun_chunks])
    return out


def word_phrases(captions: Sequence[str]) -> list[list[str]]:
    """Model-free stand-in for noun phrases: the lower-cased alphabetic non-stop-words of spaCy's blank English
    tokenizer. Not LLaVA's filter (verbs and adjectives count too); for tests and machines without the model."""
    from scitune.extras import load

    spacy = load("scitune convert caption-pairs", "spacy")
    nlp = spacy.blank("en")
    return [[t.lower_ for t in doc if t.is_alpha and not t.is_stop] for doc in nlp.pipe(captions)]


@dataclass
class PhraseFilterResult:
    """Which captions LLaVA's noun-phrase filter keeps, and the phrase counts before and after."""

    kept: list[int]
    """Indices of the kept captions, ascending."""
    before: Counter = field(default_factory=Counter)
    """Phrase -> number of captions containing it, over all captions."""
    after: Counter = field(default_factory=Counter)
    """Phrase -> number of kept captions containing it."""
    n_rare: int = 0
    """Phrases seen fewer than ``min_count`` times (their captions not kept for them)."""
    n_capped: int = 0
    """Phrases seen more than ``max_per_phrase`` times (a random ``max_per_phrase`` of their captions kept)."""
    n_no_phrase: int = 0
    """Captions without any phrase (never kept)."""


def filter_by_noun_phrases(
    phrases: Sequence[Sequence[str]], min_count: int = 3, max_per_phrase: int = 100, seed: int = 0
) -> PhraseFilterResult:
    """LLaVA's CC3M filter: count each phrase once per caption; skip phrases in fewer than ``min_count`` captions;
    keep every caption of a phrase seen ``min_count``..``max_per_phrase`` times, and a seeded random
    ``max_per_phrase`` of the captions of a more frequent phrase; return the union of the kept captions.

    Phrases are visited in sorted order with one ``random.Random(seed)``, so a seed gives the same selection.
    """
    if min_count < 1 or max_per_phrase < 1:
        raise ValueError(f"--min_count and --max_per_phrase must be >= 1, got {min_count}, {max_per_phrase}")
    holders: dict[str, list[int]] = {}
    for i, ps in enumerate(phrases):
        for p in dict.fromkeys(ps):  # once per caption, first-seen order
            holders.setdefault(p, []).append(i)
    rng = random.Random(seed)
    kept: set[int] = set()
    res = PhraseFilterResult([], Counter({p: len(ix) for p, ix in holders.items()}))
    for p in sorted(holders):
        ix = holders[p]
        if len(ix) < min_count:
            res.n_rare += 1
        elif len(ix) > max_per_phrase:
            res.n_capped += 1
            kept.update(rng.sample(ix, max_per_phrase))
        else:
            kept.update(ix)
    res.kept = sorted(kept)
    res.n_no_phrase = sum(1 for ps in phrases if not ps)
    for i in res.kept:
        res.after.update(set(phrases[i]))
    return res


# ---------------------------------------------------------------------------------------------------------- records
def load_instructions(path: str | os.PathLike[str] | None) -> list[str]:
    """Brief-description instructions: ``path`` as a JSON list of strings or a text file with one per line (blank
    lines and ``#`` lines skipped); `BRIEF_INSTRUCTIONS` when ``path`` is None."""
    if path is None:
        return list(BRIEF_INSTRUCTIONS)
    check_input_file(path, "instructions")
    if str(path).endswith(".json"):
        data = read_json(path)
        if not isinstance(data, list) or not all(isinstance(x, str) and x.strip() for x in data):
            raise DataError(f"{path}: expected a JSON list of non-empty instruction strings")
        out = [x.strip() for x in data]
    else:
        out = [t.strip() for t in read_text(path).splitlines() if t.strip() and not t.lstrip().startswith("#")]
    if not out:
        raise DataError(f"{path}: no instructions")
    return out


def stage1_records(
    pairs: Sequence[CaptionPair], instructions: Sequence[str], seed: int = 0, image_name: str = "{id}.jpg"
) -> list[dict[str, Any]]:
    """LLaVA stage-1 records: the human turn is a random instruction with ``<image>`` before or after it (each
    chosen at random, seeded), the caption is the answer. A URL image becomes ``image_name`` (formatted with the
    pair's ``id``), the URL kept in ``meta.url``."""
    rng = random.Random(f"stage1-{seed}")
    out = []
    for p in pairs:
        instr = rng.choice(instructions)
        human = f"{IMAGE_TOKEN}\n{instr}" if rng.random() < 0.5 else f"{instr}\n{IMAGE_TOKEN}"
        meta: dict[str, Any] = {"source": "caption-pairs"}
        image = p.image
        if _is_url(image):
            meta["url"], image = image, image_name.format(id=p.id)
        out.append({"id": p.id, "image": image, "conversations": [{"from": "human", "value": human},
                                                                  {"from": "gpt", "value": p.caption}], "meta": meta})  # fmt: skip
    return out


def _phrase_report(res: PhraseFilterResult, top: int | None) -> list[dict[str, Any]]:
    rows = sorted(res.before.items(), key=lambda kv: (-kv[1], kv[0]))
    return [{"phrase": p, "before": n, "after": res.after.get(p, 0)} for p, n in rows[:top]]


@CONVERTERS.register("caption-pairs")
class CaptionPairsConverter:
    """``scitune convert caption-pairs``: image/caption pairs -> LLaVA stage-1 records (noun-phrase filtered)."""

    def run(
        self,
        src: str,
        out: str,
        min_count: int = 3,
        max_per_phrase: int = 100,
        seed: int = 0,
        extractor: str = "spacy",
        spacy_model: str = SPACY_MODEL,
        instructions: str | None = None,
        no_filter: bool = False,
        id_prefix: str = "",
        image_name: str = "{id}.jpg",
        report: str | None = None,
        report_top: int | None = None,
        batch_size: int = 256,
    ) -> dict[str, Any]:
        """Filter caption pairs as LLaVA filtered CC3M (595K of 3.3M) and write stage-1 records atomically.

        Args:
            src: CC3M-style TSV (caption<TAB>url or caption<TAB>image path; an optional header line), a folder of
                images with same-named .txt captions, or a LAION-style .parquet (url/caption or image/caption).
            out: Output path; ``.json`` writes a JSON list (LLaVA's chat.json), anything else JSONL.
            min_count: Drop noun phrases seen in fewer captions than this (LLaVA: 3).
            max_per_phrase: For a phrase seen in more captions than this, keep a random subset of this many
                (LLaVA: 100).
            seed: Seed of the subsets, the instruction choice and the image-token side.
            extractor: spacy (noun chunks of --spacy_model, LLaVA's method) or words (non-stop words of spaCy's
                blank tokenizer: a model-free approximation, not LLaVA's filter).
            spacy_model: spaCy pipeline name or folder (install: python -m spacy download en_core_web_sm).
            instructions: Brief-description instructions: a .json list or a text file, one per line (default:
                scitune's own list).
            no_filter: Keep every pair (no phrase extraction).
            id_prefix: Prefix of the ids of TSV / parquet rows (ids are <prefix><row:09d>).
            image_name: Image path written for URL rows, formatted with {id} (the URL stays in meta.url).
            report: Phrase-count report path (default: <out>.phrases.json).
            report_top: Write only the N most frequent phrases in the report (default: all).
            batch_size: Captions per spaCy batch.

        Returns:
            Counts of pairs read, kept and dropped, and of phrases before and after.
        """
        if extractor not in EXTRACTORS:
            raise ValueError(f"--extractor must be one of {', '.join(EXTRACTORS)}, got {extractor!r}")
        instr = load_instructions(instructions)
        nlp = load_spacy(spacy_model) if extractor == "spacy" and not no_filter else None
        pairs, empty = read_caption_pairs(src, id_prefix)
        summary: dict[str, Any] = {"converter": "caption-pairs", "out": str(out), "pairs": len(pairs),
                                   "empty_captions": empty}  # fmt: skip
        report_doc = None
        if no_filter:
            kept = list(pairs)
        else:
            captions = [p.caption for p in pairs]
            phrases = noun_phrases(nlp, captions, batch_size) if nlp is not None else word_phrases(captions)
            res = filter_by_noun_phrases(phrases, min_count, max_per_phrase, seed)
            kept = [pairs[i] for i in res.kept]
            settings = {"extractor": extractor, "spacy_model": spacy_model if extractor == "spacy" else None,
                        "min_count": min_count, "max_per_phrase": max_per_phrase, "seed": seed}  # fmt: skip
            stats = {"phrases_before": len(res.before), "phrases_after": len(res.after), "phrases_rare": res.n_rare,
                     "phrases_capped": res.n_capped, "captions_without_phrase": res.n_no_phrase}  # fmt: skip
            report_doc = {**settings, "pairs": len(pairs), "kept": len(kept), **stats,
                          "phrases": _phrase_report(res, report_top)}  # fmt: skip
            summary.update(settings, **stats, report=report or f"{out}.phrases.json")
            summary["top_phrases"] = {r["phrase"]: [r["before"], r["after"]] for r in _phrase_report(res, 10)}
        records = stage1_records(kept, instr, seed, image_name)
        summary["records"] = write_record_file(out, records)
        if report_doc is not None:
            write_json(summary["report"], report_doc)
        summary.update(kept=len(kept), dropped=len(pairs) - len(kept), instructions=instructions or "scitune default")
        return summary
