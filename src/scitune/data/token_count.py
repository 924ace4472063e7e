"""How many tokens a text becomes, without the tokenizer's per-call cost: a proven upper bound for any tokenizer built
with `tokenizers`, and an exact count from cached words for SentencePiece-style BPE (LLaMA, Vicuna, Mistral).

Both answer for one call ``tokenizer(text, add_special_tokens=False)``, the call `scitune.data.tokenize` makes per
piece of a segment. The bound rests on this: every BPE, WordPiece, Unigram or WordLevel token covers at least one
character of the normalized, pre-tokenized text, or is one byte of a byte-fallback / byte-level character, so

    tokens <= sum over characters c of w(c) + per-split prefixes,

with w(c) = 1 when ``c`` is itself a vocabulary token (not byte-level) and its UTF-8 length otherwise, and a prefix
(Metaspace's or a ``Prepend`` normalizer's mark, ByteLevel's prefix space) on each split the added tokens make.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

MARK = "\u2581"
_SPLITTING = {
    "Whitespace",
    "WhitespaceSplit",
    "BertPreTokenizer",
    "Punctuation",
    "Digits",
    "UnicodeScripts",
    "Split",
    "CharDelimiterSplit",
    "FixedLength",
}
"""Pre-tokenizers that only cut (or drop) characters: they add nothing to the bound."""
_ASCII_SAFE = {"Lowercase", "NFC", "NFD", "NFKC", "NFKD", "Strip", "StripAccents"}
"""Normalizers that leave ASCII text ASCII and no longer (Strip only removes)."""
_NON_ASCII = re.compile("[^\x00-\x7f]+")


def _flat(node: dict[str, Any] | None, key: str) -> list[dict[str, Any]]:
    """A normalizer or pre-tokenizer as a flat list of its steps."""
    if not node:
        return []
    if node.get("type") == "Sequence":
        return [step for child in node.get(key, []) for step in _flat(child, key)]
    return [node]


class _WordCounts(dict):
    """Tokens of one pre-token (``prefix`` + the key: a word with its leading marks), computed by the model once and
    then remembered."""

    def __init__(self, model: Any, prefix: str = ""):
        super().__init__()
        self.model, self.prefix = model, prefix

    def __missing__(self, word: str) -> int:
        n = self[word] = len(self.model.tokenize(self.prefix + word))
        return n


class TokenCounter:
    """Counts for one HF tokenizer; `bound` when ``can_bound``, `exact` when ``can_count``.

    A tokenizer without a `tokenizers` backend, or with a part this module does not know, can do neither: then every
    record is tokenized by the processor.
    """

    def __init__(self, tokenizer: Any):
        self.can_bound = self.can_count = False
        self.added: list[str] = []
        self.never_drops = False
        """A non-whitespace character always gives at least one token (byte-level, byte fallback or an unk token)."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            return
        spec = json.loads(backend.to_str())
        model = spec.get("model") or {}
        kind = model.get("type")
        if kind not in ("BPE", "WordPiece", "Unigram", "WordLevel"):
            return
        vocab = tokenizer.get_vocab()
        norms = _flat(spec.get("normalizer"), "normalizers")
        pres = _flat(spec.get("pre_tokenizer"), "pretokenizers")
        if any(p.get("type") not in _SPLITTING | {"ByteLevel", "Metaspace"} for p in pres):
            return
        self.byte_level = any(p["type"] == "ByteLevel" for p in pres)
        affixed = bool(model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"))
        self._vocab = set() if self.byte_level or affixed else set(vocab)
        self._weights: dict[str, int] = {}
        self._normalizer = backend.normalizer
        self._ops: list[Callable[[str], str]] | None = self._ascii_ops(norms)
        self._exact_ops = self._ops is not None and {n.get("type") for n in norms} <= {"Prepend", "Replace"}
        """The mirror is the normalizer itself on any text (string replacements), not only on ASCII text."""
        meta = [p for p in pres if p["type"] == "Metaspace"]
        self._space = meta[0].get("replacement", MARK) if meta else None
        prefix = "".join(n["prepend"] for n in norms if n.get("type") == "Prepend")
        self._per_split = self.weight(self._mirror(prefix, with_space=True)) if prefix else 0
        if meta and _prepends(meta[0]) != "never":
            self._per_split += self.weight(self._space)
        self._per_split += sum(1 for p in pres if p["type"] == "ByteLevel" and p.get("add_prefix_space"))
        self._ascii_plain = self._ops is not None and self._keeps_length(norms)
        self._plain = (
            self._ascii_plain
            and self._exact_ops
            and all(
                len((n.get("pattern") or {}).get("String", "")) == 1 and n["pattern"]["String"].isascii()
                for n in norms
                if n.get("type") == "Replace"
            )
        )
        """The normalizer (and Metaspace) only swap ASCII characters for characters of weight 1: any text weighs
        what it weighs before them (`bound` builds no string)."""
        added = spec.get("added_tokens") or []
        self.added = [a["content"] for a in added if a.get("content")]
        """The added tokens' texts: each is one token wherever it occurs."""
        self._starts = "".join(sorted({a[0] for a in self.added}))
        self.can_bound = True
        unk = model.get("unk_token") if kind != "Unigram" else model.get("unk_id")
        removes = any(p["type"] == "CharDelimiterSplit" or p.get("behavior") == "Removed" for p in pres) or any(
            n.get("type") == "Replace" and (not n.get("content") or "Regex" in (n.get("pattern") or {})) for n in norms
        )
        self.never_drops = not removes and (self.byte_level or bool(model.get("byte_fallback")) or unk is not None)
        self._setup_count(backend, model, norms, pres, added, vocab)

    # ---- the bound
    def _ascii_ops(self, norms: list[dict[str, Any]]) -> list[Callable[[str], str]] | None:
        """The normalizer as string operations valid on ASCII text (``Prepend`` is counted per split instead), or
        None when a step has no such mirror (then `bound` asks the normalizer itself)."""
        ops: list[Callable[[str], str]] = []
        for n in norms:
            kind = n.get("type")
            pattern = (n.get("pattern") or {}).get("String")
            if kind == "Replace" and pattern:
                ops.append(lambda s, a=pattern, b=n.get("content", ""): s.replace(a, b))
            elif kind == "Lowercase":
                ops.append(str.lower)
            elif kind not in _ASCII_SAFE and kind != "Prepend":
                return None
        return ops

    def _keeps_length(self, norms: list[dict[str, Any]]) -> bool:
        """Whether the normalizer's mirror and Metaspace keep ASCII text's weight at its length: they only lowercase
        and replace single characters by single characters of weight 1 (then `bound` needs no string at all)."""
        new = [self._space] if self._space else []
        for n in norms:
            if n.get("type") == "Replace":
                pattern, content = (n.get("pattern") or {}).get("String", ""), n.get("content", "")
                if len(pattern) != 1 or len(content) != 1:
                    return False
                new.append(content)
        return all(self.weight(c) == 1 for c in new)

    def _mirror(self, text: str, with_space: bool = False) -> str:
        if self._ops is not None and (self._exact_ops or text.isascii()):
            for op in self._ops:
                text = op(text)
        elif self._normalizer is not None:
            text = self._normalizer.normalize_str(text)
        if with_space and self._space:
            text = text.replace(" ", self._space)
        return text

    def weight(self, text: str) -> int:
        """Sum of w(c) over the characters of already normalized text."""
        if self.byte_level:
            return len(text.encode("utf-8"))
        n = len(text)
        if text.isascii():
            return n
        rest = "".join(_NON_ASCII.findall(text))
        for c in set(rest):
            w = self._weights.get(c)
            if w is None:
                w = self._weights[c] = 1 if c in self._vocab else len(c.encode("utf-8"))
            if w > 1:
                n += rest.count(c) * (w - 1)
        return n

    def bound(self, text: str) -> int:
        """An upper bound on the tokens of ``tokenizer(text, add_special_tokens=False)`` (``can_bound`` only).

        Each added token that may occur starts a split of its own; their count is bounded by the occurrences of the
        added tokens' first characters.
        """
        starts = self._starts
        splits = 1 + (text.count(starts) if len(starts) == 1 else sum(map(text.count, starts)) if starts else 0)
        if self._plain:  # w(c) <= its UTF-8 length: one C pass
            return len(text.encode("utf-8")) + splits * self._per_split
        if self._ascii_plain and text.isascii():
            return len(text) + splits * self._per_split
        return self.weight(self._mirror(text, with_space=True)) + splits * self._per_split

    # ---- the exact count
    def _setup_count(self, backend: Any, model: dict[str, Any], norms, pres, added, vocab: dict[str, int]) -> None:
        """Exact counts need a BPE whose pre-tokens are words marked by a space symbol: a ``Prepend`` + ``Replace(' ',
        mark)`` normalizer and no pre-tokenizer (LLaMA's, Vicuna's tokenizer.json), or one Metaspace pre-tokenizer,
        and a vocabulary where no token holds the mark after another character. Then no merge crosses a word's start,
        so the tokens of a text are the sum of its words' tokens, each computed by the model once."""
        if model.get("type") != "BPE" or model.get("dropout") or model.get("continuing_subword_prefix"):
            return
        if model.get("end_of_word_suffix") or any(
            a.get("normalized") or a.get("lstrip") or a.get("rstrip") or a.get("single_word") for a in added
        ):
            return
        kinds = [n.get("type") for n in norms]
        if not pres and kinds and set(kinds) <= {"Prepend", "Replace"} and kinds.count("Replace") == 1:
            rep = next(n for n in norms if n["type"] == "Replace")
            mark = rep.get("content", "")
            if (rep.get("pattern") or {}).get("String") != " " or len(mark) != 1:
                return
            prefixes = [n["prepend"] for n in norms if n["type"] == "Prepend"]
            if prefixes not in ([], [mark]):
                return
            self._mode = "always" if prefixes else "never"
            self._skip_marked = False  # a Prepend normalizer marks a text that already starts with a space again
        elif not norms and len(pres) == 1 and pres[0]["type"] == "Metaspace":
            mark = pres[0].get("replacement", MARK)
            self._mode = _prepends(pres[0])
            self._skip_marked = True  # Metaspace does not mark a text that starts with its mark
        else:
            return
        if mark not in vocab or any(mark in tok.lstrip(mark) for tok in vocab):
            return
        self._mark = mark
        self._words = _WordCounts(backend.model)  # keyed by the pre-token
        self._marked = _WordCounts(backend.model, mark)  # keyed by a word that follows a space
        self._word_re = re.compile(f"{re.escape(mark)}*[^{re.escape(mark)}]+|{re.escape(mark)}+")
        contents = sorted((a["content"] for a in added if a.get("content")), key=len, reverse=True)
        self._added_re = re.compile("(" + "|".join(map(re.escape, contents)) + ")") if contents else None
        self.can_count = True

    def exact(self, text: str) -> int:
        """The tokens of ``tokenizer(text, add_special_tokens=False)`` (``can_count`` only)."""
        return self.within(text, None)[0]

    def within(self, text: str, limit: int | None) -> tuple[int, bool]:
        """``(n, exact)`` for ``tokenizer(text, add_special_tokens=False)`` (``can_count`` only): the exact count, or
        as soon as the words counted so far plus the bound of the rest come to at most ``limit``, that sum (an upper
        bound, ``exact`` False). Counting stops where the text is shown to fit."""
        if self._added_re is not None and any(c in text for c in self._starts):
            parts = self._added_re.split(text)  # text, added token, text, ...
            n, texts = len(parts) // 2, [(t, j == 0) for j, t in enumerate(parts[0::2]) if t]
        else:
            n, texts = 0, [(text, True)] if text else []
        if limit is None:
            return n + sum(self._count_words(t, first) for t, first in texts), True
        later = [self.bound(t) for t, _ in texts]
        rest, exact = sum(later), True
        for (t, first), b in zip(texts, later):
            if n + rest <= limit:  # what is left fits by its bound
                return n + rest, False
            rest -= b
            if len(t) < 1024:
                n += self._count_words(t, first)
            else:
                k, done = self._count_words(t, first, limit - n - rest)
                n, exact = n + k, exact and done
        return n, exact

    def _count_words(self, text: str, first: bool, allowed: int | None = None) -> Any:
        """Tokens of one text between added tokens; with ``allowed``, ``(n, exact)`` as in `within`."""
        mark = self._mark
        marked = self._mode == "always" or (self._mode == "first" and first)
        if self._skip_marked and text[0] in (" ", mark):
            marked = False
        if text[0] == " " or text[-1] == " " or "  " in text:  # words of several marks: build them
            normalized = (mark if marked else "") + text.replace(" ", mark)
            n = sum(map(self._words.__getitem__, self._word_re.findall(normalized)))
            return n if allowed is None else (n, True)
        parts = text.split(" ")  # the common case: one space before each word
        n, start = (0, 0) if marked else (self._words[parts[0]], 1)
        if allowed is None:
            return n + sum(map(self._marked.__getitem__, parts[start:]))
        # a word's tokens <= its UTF-8 bytes + its mark: the words not counted yet weigh at most `left`
        left = len(text.encode("utf-8")) + 1 - (len(parts[0]) + 1) * start
        for i in range(start, len(parts), 64):
            block = parts[i : i + 64]
            n += sum(map(self._marked.__getitem__, block))
            left -= sum(map(len, block)) + len(block)
            if i + 64 < len(parts) and n + left <= allowed:
                return n + left, False
        return n, True


def _prepends(metaspace: dict[str, Any]) -> str:
    """Metaspace's prepend scheme: always | first | never (older files say add_prefix_space)."""
    scheme = metaspace.get("prepend_scheme")
    if scheme is None:
        return "always" if metaspace.get("add_prefix_space", True) else "never"
    return str(scheme)
