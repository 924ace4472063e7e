"""Wu-Palmer similarity between generated text and the true class word (LiMBeR's taxonomic closeness), on WordNet 3.0
read offline from Debian's ``wordnet-base`` files with nltk's WordNet reader (no nltk_data download)."""

from __future__ import annotations

import functools
import io
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scitune.io import DataError, iter_jsonl, read_json, write_json, write_jsonl

__all__ = [
    "WordNetMissingError",
    "WupOptions",
    "best_match",
    "candidate_words",
    "find_wordnet_dir",
    "label_synsets",
    "load_wordnet",
    "run_wup",
    "score_items",
]

ENV_VAR = "SCITUNE_WORDNET_DIR"
WORDNET_DIRS = ("/usr/share/wordnet", "/usr/local/share/wordnet")
_REQUIRED = ("index.noun", "data.noun", "data.adj", "noun.exc")

# WordNet 3.0's 45 lexicographer files, numbered 00..44 (the `lexnames` file of the Princeton release, documented in
# lexnames(5WN)); Debian's wordnet-base ships the database without that file, and nltk's reader needs it.
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body noun.cognition "
    "noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive noun.object "
    "noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape "
    "noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication verb.competition "
    "verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession verb.social "
    "verb.stative verb.weather adj.ppl"
).split()
_POS_NUMBER = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}

# Function words never taken as the generated noun: many have rare noun senses in WordNet ("a" = vitamin A,
# "it" = information technology, "in" = inch, "us" = United States) that would otherwise win the max.
STOPWORDS = frozenset(
    "a an the this that these those it its is are was were be been being am do does did has have had having "
    "i me my we us our you your he him his she her they them their what which who whom whose where when why how "
    "and or but nor not no yes so if then than too very can could will would shall should may might must "
    "of in on at to from by for with about as into onto over under between through during before after above below "
    "up down out off again there here all any both each few more most other some such only own same just also "
    "one two three".split()
)
_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")
_SYNSET_ID = re.compile(r"^[a-z0-9_.'-]+\.n\.\d{2}$")


@dataclass
class WupOptions:
    """Wu-Palmer similarity of generated text to the true class word."""

    predictions: str
    """JSONL with one {"id", "text", "label"} per line (text = the generated caption or answer)."""
    out: str
    """Output folder: wup.jsonl (per item), results.json and wup_hist.png."""
    overwrite: bool = False
    """Write into an --out folder that holds files scitune did not write (they are kept, never replaced)."""
    wordnet_dir: str | None = None
    """Folder of the WordNet 3.0 database (default: $SCITUNE_WORDNET_DIR, else /usr/share/wordnet)."""
    first_sense: bool = False
    """Use only each word's most frequent noun sense (default: every noun sense; the max over pairs wins)."""
    ignore: list[str] = field(default_factory=list)
    """Words of the text never taken as the generated noun, e.g. a prompt's boilerplate: [picture, photo]."""
    text_field: str = "text"
    """Record field holding the generated text."""
    label_field: str = "label"
    """Record field holding the true class word (or a synset id such as dog.n.01)."""
    label_map: str | None = None
    """JSON file {label: WordNet term or synset id} for labels WordNet lacks or names ambiguously, e.g.
    {"Scatterplot": "graph.n.01", "Graph Plot": "plot.n.04"}."""


class WordNetMissingError(FileNotFoundError):
    """The WordNet 3.0 database files are not installed."""


def find_wordnet_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The folder with WordNet 3.0's ``index.*`` / ``data.*`` files: ``path``, else ``$SCITUNE_WORDNET_DIR``, else
    Debian's ``/usr/share/wordnet``.

    Raises:
        WordNetMissingError: no such folder; the message names the apt package that installs it.
    """
    candidates = [Path(path)] if path else [Path(p) for p in (os.environ.get(ENV_VAR), *WORDNET_DIRS) if p]
    for d in candidates:
        if all((d / f).is_file() for f in _REQUIRED):
            return d
    looked = ", ".join(str(d) for d in candidates) or "no folder"
    raise WordNetMissingError(
        f"WordNet 3.0 database files ({', '.join(_REQUIRED)}) not found in {looked}: install Debian's "
        f"'wordnet-base' package (apt-get install wordnet-base), or point --wordnet_dir / ${ENV_VAR} at a folder "
        "holding them"
    )


def _reader_class():
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class DebianWordNetReader(WordNetCorpusReader):
        """nltk's reader over a bare WordNet 3.0 database folder: the missing ``lexnames`` file is supplied from the
        documented table, and the map to nltk's own WordNet 3.0 (for multilingual data) is skipped: it *is* 3.0."""

        def open(self, file):
            if file == "lexnames":
                return io.StringIO(
                    "".join(f"{i:02d}\t{n}\t{_POS_NUMBER[n.split('.')[0]]}\n" for i, n in enumerate(_LEXNAMES))
                )
            return super().open(file)

        def map_wn(self, version="wordnet"):
            return None

    return DebianWordNetReader


@functools.lru_cache(maxsize=4)
def _load(folder: str) -> Any:
    import warnings

    import nltk

    # nltk >= 3.9 only opens corpus files under a folder listed in nltk.data.path
    if folder not in nltk.data.path:
        nltk.data.path.append(folder)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The multilingual functions are not available")
        wn = _reader_class()(folder, None)
    version = wn.get_version()
    if version != "3.0":
        raise ValueError(f"{folder}: expected WordNet 3.0, found version {version!r}")
    return wn


def load_wordnet(path: str | os.PathLike[str] | None = None) -> Any:
    """nltk's ``WordNetCorpusReader`` over the WordNet 3.0 files (see `find_wordnet_dir`); cached per folder."""
    return _load(str(find_wordnet_dir(path).resolve()))


def candidate_words(text: str, ignore: frozenset[str] | set[str] = frozenset(), max_ngram: int = 3) -> list[str]:
    """Words and multi-word terms of ``text`` to look up as nouns, in order, without repeats.

    Lower-cased alphabetic tokens (hyphens and apostrophes inside a word kept) except single letters ("Sample C"
    would match the letter, carbon, ...), `STOPWORDS` and ``ignore``, plus the 2- and 3-word spans that neither
    start nor end with such a word, joined with ``_`` as WordNet writes them ("bar chart" -> ``bar_chart``).
    """
    skip = STOPWORDS | {w.lower() for w in ignore} | {""}
    toks = [t if len(t) > 1 else "" for t in _WORD.findall(text.lower())]  # "" marks a dropped single letter
    out: dict[str, None] = {}
    for n in range(1, max_ngram + 1):
        for i in range(len(toks) - n + 1):
            span = toks[i : i + n]
            if span[0] in skip or span[-1] in skip or "" in span:
                continue
            out["_".join(span)] = None
    return list(out)


def noun_synsets(wn: Any, word: str, first_sense: bool = False) -> list[Any]:
    """Noun synsets of ``word`` (inflections reduced by WordNet's morphy: "dogs" -> dog); the most frequent only with
    ``first_sense``."""
    synsets = wn.synsets(word, pos="n")
    return synsets[:1] if first_sense else synsets


def label_synsets(wn: Any, label: str, first_sense: bool = False) -> list[Any]:
    """Noun synsets of a true class: a synset id ("dog.n.01") names one sense exactly; otherwise the label's noun
    synsets as one term ("bar chart" -> bar_chart), else those of its last word (its head noun: "graph plot" ->
    plot). Empty when WordNet knows none of these."""
    label = label.strip().lower()
    if _SYNSET_ID.match(label):
        from nltk.corpus.reader.wordnet import WordNetError

        try:
            return [wn.synset(label)]
        except WordNetError:
            return []
    words = _WORD.findall(label)
    if not words:
        return []
    return noun_synsets(wn, "_".join(words), first_sense) or noun_synsets(wn, words[-1], first_sense)


def best_match(
    wn: Any, text: str, truth: list[Any], first_sense: bool = False, ignore: frozenset[str] | set[str] = frozenset()
) -> dict[str, Any] | None:
    """The (generated noun sense, true sense) pair of highest Wu-Palmer similarity, or None when ``text`` has no noun
    that WordNet knows (words in ``ignore`` are not looked up)."""
    best: dict[str, Any] | None = None
    truth_set = set(truth)
    for word in candidate_words(text, ignore):
        for g in noun_synsets(wn, word, first_sense):
            if g in truth_set:  # the true class itself (or a synonym of it) is named: similarity 1
                return {"score": 1.0, "word": word, "synset": g.name(), "label_synset": g.name()}
            for t in truth:
                s = g.wup_similarity(t) or 0.0
                if best is None or s > best["score"]:
                    best = {"score": float(s), "word": word, "synset": g.name(), "label_synset": t.name()}
    return best


def score_items(
    wn: Any,
    items: list[dict[str, Any]],
    first_sense: bool = False,
    ignore: frozenset[str] | set[str] = frozenset(),
    label_map: dict[str, str] | None = None,
) -> tuple[list[dict], dict[str, Any]]:
    """Score ``{id, text, label}`` items; return per-item rows and the summary (see docs/analysis.md).

    Item score = max over noun synsets g of the text's words and noun synsets t of the label of wup(g, t); 0 when
    the text names no noun WordNet knows; items whose label WordNet does not know are left out of the means.
    ``label_map`` replaces a label by the WordNet term or synset id to look up.
    """
    label_map = label_map or {}
    from tqdm.auto import tqdm

    rows, label_cache = [], {}
    for it in tqdm(items, desc="wup", disable=len(items) < 200):
        lab = it["label"]
        if lab not in label_cache:
            label_cache[lab] = label_synsets(wn, label_map.get(lab, lab), first_sense)
        truth = label_cache[lab]
        row: dict[str, Any] = {"id": it["id"], "label": lab, "text": it["text"]}
        if not truth:
            rows.append({**row, "status": "unknown_label", "score": None})
            continue
        m = best_match(wn, it["text"], truth, first_sense, ignore)
        status = "no_noun" if m is None else ("exact" if m["score"] == 1.0 else "related")
        rows.append({**row, "status": status, **(m or {"score": 0.0})})
    scored = [r["score"] for r in rows if r["score"] is not None]
    not_named = [r["score"] for r in rows if r["status"] in ("related", "no_noun")]
    counts = Counter(r["status"] for r in rows)
    summary = {
        "wup_mean": sum(scored) / len(scored) if scored else None,
        "wup_mean_not_named": sum(not_named) / len(not_named) if not_named else None,
        "exact_rate": counts["exact"] / len(scored) if scored else None,
        "n": len(rows),
        "n_scored": len(scored),
        "n_exact": counts["exact"],
        "n_no_noun": counts["no_noun"],
        "n_unknown_label": counts["unknown_label"],
        "unknown_labels": sorted({r["label"] for r in rows if r["status"] == "unknown_label"}),
    }
    return rows, summary


def read_predictions(path: str | os.PathLike[str], text_field: str = "text", label_field: str = "label") -> list[dict]:
    """Read ``{id, text, label}`` JSONL; a missing field or a repeated id raises `DataError` naming them."""
    items, seen, dupes = [], set(), []
    for lineno, rec in iter_jsonl(path):
        where = f"{path}:{lineno}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        ident = str(rec.get("id", f"line{lineno}"))
        for key in (text_field, label_field):
            if not isinstance(rec.get(key), str):
                raise DataError(f"{where} (id {ident}): field {key!r} must be a string, got {rec.get(key)!r}")
        if ident in seen:
            dupes.append(ident)
        seen.add(ident)
        items.append({"id": ident, "text": rec[text_field], "label": rec[label_field]})
    if dupes:
        raise DataError(f"{path}: repeated id(s) {sorted(set(dupes))[:10]}")
    if not items:
        raise DataError(f"{path}: no predictions")
    return items


def run_wup(
    predictions: str | os.PathLike[str],
    out: str | os.PathLike[str],
    wordnet_dir: str | None = None,
    first_sense: bool = False,
    text_field: str = "text",
    label_field: str = "label",
    ignore: list[str] | tuple[str, ...] = (),
    label_map: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Score a predictions file; write ``wup.jsonl`` (per item), ``results.json`` and ``wup_hist.png`` into ``out``."""
    from scitune.eval.plots import histograms

    wn = load_wordnet(wordnet_dir)
    items = read_predictions(predictions, text_field, label_field)
    mapping = read_json(label_map) if label_map else {}
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise DataError(f"{label_map}: expected a JSON object of label -> WordNet term or synset id")
    rows, summary = score_items(wn, items, first_sense, frozenset(ignore), mapping)
    from scitune.outputs import claim_output_folder

    out = claim_output_folder(out, "analysis", ("wup.jsonl", "results.json", "wup_hist.png"), overwrite)
    write_jsonl(out / "wup.jsonl", rows)
    scores = {"all scored": [r["score"] for r in rows if r["score"] is not None]}
    scores["class not named"] = [r["score"] for r in rows if r["status"] in ("related", "no_noun")]
    histograms(out / "wup_hist.png", {k: v for k, v in scores.items() if v}, "Wu-Palmer similarity", "wup", bins=20)
    results = {
        **summary,
        "predictions": str(predictions),
        "wordnet": {"dir": str(find_wordnet_dir(wordnet_dir)), "version": wn.get_version()},
        "first_sense": first_sense,
        "ignore": sorted(ignore),
        "label_map": mapping,
    }
    write_json(out / "results.json", results)
    return results
