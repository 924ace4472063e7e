"""Captions scored as the COCO caption papers score them: pycocoevalcap's PTB tokenization, BLEU-1..4, METEOR,
ROUGE-L, CIDEr (and SPICE on request) over several references per image. The Java parts (PTBTokenizer, METEOR,
SPICE) run only where ``java`` exists; without it the tokenizer falls back to a pure-Python one and METEOR / SPICE
are left out with the reason."""

from __future__ import annotations

import contextlib
import io
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scitune.extras import MissingExtra, load

__all__ = [
    "JAVA_HINT",
    "METRICS",
    "MissingJava",
    "java_available",
    "score_captions",
    "score_by_group",
    "spice_models_present",
    "tokenize_captions",
]

METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE")
"""pycocoevalcap's metric names, in COCOEvalCap's order."""
JAVA_HINT = "install a Java runtime (e.g. apt-get install default-jre-headless) and put `java` on PATH"
_FEATURE = "COCO caption metrics"


class MissingJava(MissingExtra):
    """A Java part of pycocoevalcap was asked for explicitly and ``java`` is not on PATH."""


def java_available() -> bool:
    """True when a ``java`` executable is on PATH (pycocoevalcap starts its jars with it)."""
    return shutil.which("java") is not None


def _package_dir() -> Path:
    pkg = load(_FEATURE, "pycocoevalcap")
    return Path(next(iter(pkg.__path__)))


def spice_models_present() -> bool:
    """True when SPICE's Stanford CoreNLP 3.6.0 jar is installed beside pycocoevalcap's SPICE jar (pycocoevalcap
    would otherwise download it on first use, which scitune never triggers)."""
    return (_package_dir() / "spice" / "lib" / "stanford-corenlp-3.6.0.jar").is_file()


def tokenize_captions(
    references: Mapping[str, Sequence[str]], predictions: Mapping[str, str], tokenizer: str = "auto"
) -> tuple[dict[str, list[str]], dict[str, list[str]], str]:
    """Tokenize references and predictions the way the scorers expect them.

    Args:
        references: id -> reference captions.
        predictions: id -> the generated caption (same ids).
        tokenizer: ``ptb`` (pycocoevalcap's Java PTBTokenizer, lower-cased, punctuation removed: what COCO
            papers report), ``simple`` (`scitune.eval.captioning.coco_tokenize`, pure Python) or ``auto`` (ptb
            where java exists, else simple).

    Returns:
        ``(gts, res, used)``: id -> tokenized references, id -> [tokenized prediction], and the tokenizer used.
    """
    if tokenizer not in ("auto", "ptb", "simple"):
        raise ValueError(f"unknown caption tokenizer {tokenizer!r}; known: auto, ptb, simple")
    if tokenizer == "ptb" and not java_available():
        raise MissingJava(f"--tokenizer ptb runs pycocoevalcap's Java PTBTokenizer, but java is not found: {JAVA_HINT}"
                          " (or use --tokenizer simple)")  # fmt: skip
    used = "ptb" if tokenizer == "ptb" or (tokenizer == "auto" and java_available()) else "simple"
    if used == "simple":
        from scitune.eval.captioning import coco_tokenize

        gts = {k: [coco_tokenize(r) for r in refs] for k, refs in references.items()}
        return gts, {k: [coco_tokenize(predictions[k])] for k in references}, used
    # one java start for both sides: PTBTokenizer tokenizes line by line (-preserveLines), so tokenizing references
    # and predictions together gives what two calls (COCOEvalCap's) give
    # and predictions together gives what two calls (COCOEvalCap's) give. Blank captions (a missing prediction) are
    # kept out: the jar may drop a trailing blank line, and their tokens are "" anyway.
    both = {("ref", k): [{"caption": r} for r in refs] for k, refs in references.items()}
    both.update({("hyp", k): [{"caption": predictions[k]}] for k in references if predictions[k].strip()})
    tokens = load(_FEATURE, "pycocoevalcap.tokenizer.ptbtokenizer").PTBTokenizer().tokenize(both)
    return {k: tokens[("ref", k)] for k in references}, {k: tokens.get(("hyp", k), [""]) for k in references}, used


def _quiet(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a pycocoevalcap scorer without its prints on stdout (they would break ``--predictions`` pipelines)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


class _JavaScorers:
    """pycocoevalcap's METEOR / SPICE scorers, started once and reused (one METEOR process loads its paraphrase
    table once for every group scored); `close` stops them."""

    def __init__(self) -> None:
        self._meteor: Any = None

    def meteor(self, gts: dict, res: dict) -> tuple[float, list[float]]:
        if self._meteor is None:
            self._meteor = load(_FEATURE, "pycocoevalcap.meteor.meteor").Meteor()
        return _quiet(self._meteor.compute_score, gts, res)

    def spice(self, gts: dict, res: dict) -> tuple[float, list[Any]]:
        return _quiet(load(_FEATURE, "pycocoevalcap.spice.spice").Spice().compute_score, gts, res)

    def close(self) -> None:
        self._meteor = None  # Meteor.__del__ stops its java process


def _check(references: Mapping[str, Sequence[str]], meteor: str, spice: bool) -> bool:
    """Validate the arguments of `score_captions`; return whether java is available."""
    if meteor not in ("auto", "on", "off"):
        raise ValueError(f"--meteor must be auto, on or off, got {meteor!r}")
    if not references:
        raise ValueError("no references to score against")
    empty = [k for k, refs in references.items() if not refs]
    if empty:
        raise ValueError(f"{len(empty)} item(s) have no reference caption, e.g. {empty[0]!r}")
    java = java_available()
    for flag, wanted in (("--meteor on", meteor == "on"), ("--spice", spice)):
        if wanted and not java:
            raise MissingJava(f"{flag} runs a pycocoevalcap jar, but java is not found: {JAVA_HINT}")
    if spice and not spice_models_present():
        raise MissingExtra(f"--spice needs Stanford CoreNLP 3.6.0 in {_package_dir() / 'spice' / 'lib'} (pycocoevalcap"
                           " downloads it on first use; scitune does not): fetch it once with pycocoevalcap's "
                           "spice/get_stanford_models.py on a machine with internet")  # fmt: skip
    return java


def _score_tokenized(gts: dict, res: dict, java: bool, meteor: str, spice: bool, jars: _JavaScorers) -> dict:
    """The scorers on tokenized captions (COCOEvalCap's order): ``{"scores", "per_item", "count", "skipped"}``."""
    ids = list(gts)
    scores: dict[str, Any] = {}
    per_item: dict[str, dict[str, Any]] = {}
    bleu, bleus = _quiet(load(_FEATURE, "pycocoevalcap.bleu.bleu").Bleu(4).compute_score, gts, res, verbose=0)
    for n in range(4):
        scores[f"Bleu_{n + 1}"] = float(bleu[n])
        per_item[f"Bleu_{n + 1}"] = dict(zip(ids, map(float, bleus[n])))
    skipped: dict[str, str] = {}
    if meteor == "off":
        skipped["METEOR"] = "--meteor off"
    elif not java:
        skipped["METEOR"] = f"needs java (pycocoevalcap runs meteor-1.5.jar): {JAVA_HINT}"
    else:
        score, items = jars.meteor(gts, res)
        scores["METEOR"], per_item["METEOR"] = float(score), dict(zip(ids, map(float, items)))
    scores.setdefault("METEOR", None)
    for name, module, cls in (("ROUGE_L", "rouge.rouge", "Rouge"), ("CIDEr", "cider.cider", "Cider")):
        score, items = getattr(load(_FEATURE, f"pycocoevalcap.{module}"), cls)().compute_score(gts, res)
        scores[name], per_item[name] = float(score), dict(zip(ids, map(float, items)))
    if spice:
        score, items = jars.spice(gts, res)
        scores["SPICE"] = float(score)
        per_item["SPICE"] = {k: float(v["All"]["f"]) for k, v in zip(sorted(ids), items)}
    return {"scores": scores, "per_item": per_item, "count": len(ids), "skipped": skipped}


def score_captions(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    *,
    tokenizer: str = "auto",
    meteor: str = "auto",
    spice: bool = False,
) -> dict[str, Any]:
    """Corpus caption scores with pycocoevalcap's scorers, as ``COCOEvalCap.evaluate`` computes them.

    Args:
        predictions: id -> generated caption; an id without a prediction is scored as an empty caption.
        references: id -> its reference captions (at least one each); these ids are the evaluated set.
        tokenizer: see `tokenize_captions`.
        meteor: ``auto`` (computed where java exists, else left out with the reason), ``on`` (java required) or
            ``off``.
        spice: also compute SPICE (needs java and SPICE's Stanford CoreNLP jars; never downloaded here).

    Returns:
        ``{"scores": {metric: value (pycocoevalcap's 0-1 scale, CIDEr ~0-10) or None}, "per_item": {metric: {id:
        value}}, "tokenizer", "count", "skipped": {metric: reason}}``.

    Raises:
        MissingJava: ``tokenizer="ptb"``, ``meteor="on"`` or ``spice`` without java.
    """
    return score_by_group(predictions, references, {}, tokenizer=tokenizer, meteor=meteor, spice=spice)["overall"]


def score_by_group(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    groups: Mapping[str, str],
    order: Sequence[str] = (),
    *,
    tokenizer: str = "auto",
    meteor: str = "auto",
    spice: bool = False,
) -> dict[str, dict[str, Any]]:
    """`score_captions` on each group of ids (e.g. NoCaps' domains) and on all of them (``overall``).

    Each group is scored on its own, as the NoCaps evaluation scores its in-/near-/out-domain subsets (CIDEr's
    document frequencies come from the group's references); the captions are tokenized once and METEOR's java
    process is shared. ``order`` lists the groups first in that order; ids of no group count in ``overall`` only.
    """
    java = _check(references, meteor, spice)
    hyps = {k: predictions.get(k, "") for k in references}
    gts, res, used = tokenize_captions(references, hyps, tokenizer)
    present = set(groups.values())
    names = [g for g in order if g in present] + sorted(present - set(order))
    jars = _JavaScorers()
    out = {}
    try:
        for name in [*names, "overall"]:
            keep = [k for k in gts if name == "overall" or groups.get(k) == name]
            sub_gts, sub_res = {k: gts[k] for k in keep}, {k: res[k] for k in keep}
            out[name] = {**_score_tokenized(sub_gts, sub_res, java, meteor, spice, jars), "tokenizer": used}
    finally:
        jars.close()
    return out
