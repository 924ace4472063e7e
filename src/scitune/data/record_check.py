"""One record's verdict, as `scitune.data.dataset.check_record` gives it, without its cost where it can be proven:
images are opened for their header once per file, and a record is tokenized only when no cheaper count shows it
fits the context. Whenever the fast path cannot prove a record good, `check_record` decides it, so every problem is
reported with the same message as before."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

from scitune.data.conversation import ROLE_OF, Message, from_messages, place_image_tokens
from scitune.data.dataset import ImageCheck, check_record, too_long
from scitune.data.templates import LlavaV0Base, SeparatorTemplate
from scitune.data.token_count import TokenCounter
from scitune.images import ImageRoot, check_image
from scitune.io import DataError

log = logging.getLogger(__name__)

SELF_CHECKS = 32
"""Records per kind of count (exact, bound) that are also tokenized, to check the count against the processor."""
_SENTINEL = re.compile("\x00(\\d+)\x00")
_PRINTABLE = re.compile("[!-~]")
_FROM, _VALUE = itemgetter("from"), itemgetter("value")
_PROBE = ("  two  spaces\tand\nnew lines ", "caf\u00e9 {0} \u6771\u4eac \U0001f600", "", " x}", "</s> <s> y ")
Segments = list[tuple[str, bool]]


def _turns(rec: dict[str, Any]) -> tuple[tuple[str, ...], list[str]] | None:
    """Roles and texts of a record that `record_messages` accepts (system first, if any), or None when it may not."""
    conv = rec.get("conversations")
    if type(conv) is not list or not conv:
        return None
    try:  # the usual spelling (human/gpt), at C speed
        roles = list(map(ROLE_OF.__getitem__, map(_FROM, conv)))
        texts = list(map(_VALUE, conv))
    except (KeyError, TypeError):
        roles, texts = [], []
        for t in conv:
            role = ROLE_OF.get(str(t.get("from", "")).lower()) if type(t) is dict else None
            if role is None:
                return None
            roles.append(role)
            texts.append(t.get("value"))
    if set(map(type, texts)) != {str}:
        return None
    if isinstance(rec.get("system"), str):
        roles.insert(0, "system")
        texts.insert(0, rec["system"])
    body = roles[1:] if roles[0] == "system" else roles
    if set(body[0::2]) != {"user"} or not set(body[1::2]) <= {"assistant"} or len(body) < 2:
        return None
    return tuple(roles), texts


def _image_paths(rec: dict[str, Any]) -> list[str] | None:
    """`record_images`, or None for a value it refuses."""
    img = rec.get("image")
    if img is None or img == "":
        return []
    if type(img) is str:
        return [img]
    if type(img) is list and all(type(x) is str for x in img):
        return img
    return None


@dataclass(frozen=True)
class _Layout:
    """A template's text for one role sequence, each message's text a `str.format` field: segment by segment
    (``segments``: format string, trained) and as a whole; ``trains``: the template's own text proves that a
    token is trained (see `RecordChecker._trains`)."""

    segments: tuple[tuple[str, bool], ...]
    whole: str
    trains: bool


class RecordChecker:
    """Checks records of one data file against one processor and context length.

    Args:
        processor: the `scitune.processor.Processor` that training uses.
        image_root: folder of relative image paths.
        max_length: the context (--data.max_length).
        placement: --data.image_placement.
        image_check: pixel limit and whether paths may leave the root.
        full: check every record the old way (decode every image, tokenize every record).
    """

    def __init__(
        self,
        processor: Any,
        image_root: Path,
        max_length: int,
        placement: str = "as-is",
        image_check: ImageCheck | None = None,
        full: bool = False,
    ):
        self.processor, self.root, self.max_length, self.placement = processor, Path(image_root), max_length, placement
        self.image_check = image_check or ImageCheck()
        self.full = full
        self.counter = TokenCounter(processor.tokenizer)
        self.token = processor.image_token
        self.template = processor.template
        self.bos = 1 if self.template.add_bos and processor.tokenizer.bos_token_id is not None else 0
        self.paths = ImageRoot(self.root, self.image_check.allow_outside_root)
        self._images: dict[str, tuple[int, int] | DataError] = {}  # record path -> size or problem
        self._files: dict[Path, tuple[int, int] | DataError] = {}  # file -> size or problem
        self._image_tokens: dict[tuple[int, int], int] = {}
        self._layouts: dict[tuple[str, ...], _Layout | None] = {}
        self._checks = {True: SELF_CHECKS, False: SELF_CHECKS}
        self._bounds: list[int] = []  # the record's piece bounds: the word pass reuses the bound pass's
        self.n_exact = self.n_bound = 0
        verbatim = type(self.template)._segments in (SeparatorTemplate._segments, LlavaV0Base._segments)
        self._verbatim = verbatim  # the text of these templates is assembled from a layout, not rendered
        self.whole_text = None if full else self._scheme()
        known = self.whole_text is not None
        self.use_count, self.use_bound = known and self.counter.can_count, known and self.counter.can_bound

    # ---- the verdict
    def check(self, rec: dict[str, Any]) -> tuple[int, bool]:
        """``(tokens, exact)`` of a good record: its length, exact or an upper bound that fits the context. A bad
        record raises ``ValueError``/`DataError` with `check_record`'s message."""
        if not self.full:
            fast = self._fast(rec)
            if fast is not None:
                return fast
        size = None if self.full else self.size
        sample = check_record(rec, self.processor, self.root, self.max_length, self.placement, self.image_check, size)
        self.n_exact += 1
        return len(sample.encoded), True

    def size(self, path: Path) -> tuple[int, int]:
        """An image's (width, height) from its header (`check_image`), once per file."""
        hit = self._files.get(path)
        if hit is None:
            try:
                hit = check_image(path, self.image_check.max_pixels)
            except DataError as e:
                hit = e
            self._files[path] = hit
        if isinstance(hit, DataError):
            raise hit
        return hit

    def _fast(self, rec: dict[str, Any]) -> tuple[int, bool] | None:
        """The record's length when the cheap checks prove it good; None leaves the verdict to `check_record`."""
        try:
            if "conversations" not in rec:  # a chat `messages` record: its canonical form, as `record_messages` reads
                rec = from_messages(rec, self.token)
            if self.placement != "as-is":
                rec = place_image_tokens(rec, self.placement, token=self.token)
        except ValueError:
            return None
        turns, rels = _turns(rec), _image_paths(rec)
        if turns is None or rels is None:
            return None
        sizes = [self._image(rel) for rel in rels]
        if None in sizes:
            return None
        roles, texts = turns
        ph = self.token
        users = texts[1::2] if roles[0] == "system" else texts[0::2]  # the roles alternate (`_turns`)
        if sum(map(str.count, users, repeat(ph))) != len(rels):
            return None
        layout = self._layout(roles)
        if layout is not None:  # its own text holds no placeholder: then none may be outside the user turns
            segments, whole = None, layout.whole.format(*texts)
        else:
            segments = self._render(roles, texts)
            if segments is None or any(trained and ph in text for text, trained in segments):
                return None
            whole = "".join(text for text, _ in segments)
        if whole.count(ph) != len(rels):
            return None
        images = sum(self._tokens_of(s) for s in sizes)
        fixed = self.bos + images
        self._bounds = []  # this record's piece bounds, from the bound pass
        for words in (False, True):  # the bound first; count words only where it cannot show the record fits
            if not (self.use_count if words else self.use_bound):
                continue
            n, trains, exact = self._count(whole, layout, segments, texts, words, self.max_length - fixed)
            if (fixed + n > self.max_length and not exact) or not trains:
                continue
            if self._checks[words] > 0 and not self._agrees(roles, texts, sizes, fixed + n, words, exact):
                return None
            if fixed + n > self.max_length:  # counted exactly: over the context (the record's first problem)
                raise ValueError(too_long(fixed + n, images, self.max_length))
            if exact:
                self.n_exact += 1
            else:
                self.n_bound += 1
            return fixed + n, exact
        return None

    # ---- counting
    def _count(
        self, whole: str, layout: _Layout | None, segments: Segments | None, texts: list[str], words: bool, budget: int
    ) -> tuple[int, bool, bool]:
        """``(n, trains, exact)``: the text's tokens as `Processor.encode` tokenizes it (the whole text at once, or
        segment by segment: `_scheme`), by the bound, or with ``words`` counted word by word until the rest's bound
        fits ``budget`` (``exact`` when every word was counted); ``trains``: some token is surely trained."""
        ph, counter = self.token, self.counter
        if self.whole_text:
            pieces = [p for p in whole.split(ph) if p]
            trains = (layout is not None and layout.trains) or self._trains(segments or self._fill(layout, texts))
            if not words:
                self._bounds = list(map(counter.bound, pieces))  # the word pass that may follow reuses them
                return sum(self._bounds), trains, False
            bounds = self._bounds if len(self._bounds) == len(pieces) else [counter.bound(p) for p in pieces]
            n, rest, exact = 0, sum(bounds), True
            for piece, b in zip(pieces, bounds):  # each piece may use what the others' bounds leave
                if n + rest <= budget:
                    return n + rest, trains, False
                rest -= b
                k, done = counter.within(piece, budget - n - rest)
                n, exact = n + k, exact and done
            return n, trains, exact
        segments = segments or self._fill(layout, texts)
        count = counter.exact if words else counter.bound
        n = trained = 0
        for text, is_trained in segments:
            k = sum(count(p) for p in text.split(ph) if p)
            n += k
            trained += k if is_trained else 0
        if words:
            return n, trained > 0, True
        return n, (layout is not None and layout.trains) or self._trains(segments), False

    def _trains(self, segments: Segments) -> bool:
        """Proof that some token is trained: a trained segment that ends with an added token (one token of its
        own, e.g. ``</s>``); or, with a tokenizer that never drops a character, a trained last segment holding a
        printable ASCII character (the text's last token is then the segment's), or, when segments are tokenized
        one by one, any trained segment holding one."""
        added = tuple(self.counter.added)
        if added and any(trained and text.endswith(added) for text, trained in segments):
            return True
        if not self.counter.never_drops or not segments:
            return False
        last, trained = segments[-1]
        if trained and _PRINTABLE.search(last):
            return True
        return not self.whole_text and any(trained and _PRINTABLE.search(text) for text, trained in segments)

    def _agrees(self, roles: tuple[str, ...], texts: list[str], sizes: list, n: int, words: bool, exact: bool) -> bool:
        """Tokenize the first records of each kind of count, too: a count that disagrees with the processor (an
        exact one that differs, a bound below it) is not used again (the verdicts then come from tokenizing)."""
        self._checks[words] -= 1
        true = len(self.processor.encode([Message(r, t) for r, t in zip(roles, texts)], sizes))
        if (true == n) if exact else (true <= n):
            return True
        log.warning(
            "the %s token count (%d) disagrees with the tokenizer (%d): tokenizing instead",
            "word" if words else "bound",
            n,
            true,
        )
        if words:
            self.use_count = False
        else:
            self.use_bound = False
        return False

    def _scheme(self) -> bool | None:
        """Whether `Processor.encode` tokenizes a conversation's whole text at once (True) or segment by segment
        (False), found by encoding a probe both ways; None when neither matches (nothing is counted then)."""
        proc, tok = self.processor, self.processor.tokenizer
        messages = [
            Message("user", f"{self.token}\nWhat is  shown? "),
            Message("assistant", " A plot, of x. "),
            Message("user", "And y?\t"),
            Message("assistant", "Yes, it is."),
        ]
        try:
            segments = self.template.render(messages, tok)
            true = len(proc.encode(messages, [(32, 32)]))
        except ValueError:
            return None
        fixed = self.bos + self._tokens_of((32, 32))

        def tokens(texts: list[str]) -> int:
            pieces = [p for t in texts for p in t.split(self.token) if p]
            return fixed + sum(len(tok(p, add_special_tokens=False)["input_ids"]) for p in pieces)

        if true == tokens([s.text for s in segments]):
            return False
        if true == tokens(["".join(s.text for s in segments)]):
            return True
        log.warning("cannot tell how the processor tokenizes a conversation: every record is tokenized")
        return None

    # ---- parts
    def _image(self, rel: str) -> tuple[int, int] | None:
        hit = self._images.get(rel)
        if hit is None:
            try:
                hit = self.size(self.paths.resolve(rel))
            except DataError as e:
                hit = e
            self._images[rel] = hit
        return None if isinstance(hit, DataError) else hit

    def _tokens_of(self, size: tuple[int, int]) -> int:
        n = self._image_tokens.get(size)
        if n is None:
            n = self._image_tokens[size] = self.processor.image_tokens(size)
        return n

    def _render(self, roles: tuple[str, ...], texts: list[str]) -> Segments | None:
        try:
            rendered = self.template.render([Message(r, t) for r, t in zip(roles, texts)], self.processor.tokenizer)
        except ValueError:
            return None
        return [(s.text, s.trainable) for s in rendered]

    @staticmethod
    def _fill(layout: _Layout | None, texts: list[str]) -> Segments:
        return [(form.format(*texts), trained) for form, trained in layout.segments] if layout else []

    def _layout(self, roles: tuple[str, ...]) -> _Layout | None:
        if roles not in self._layouts:
            self._layouts[roles] = self._build_layout(roles) if self._verbatim else None
        return self._layouts[roles]

    def _build_layout(self, roles: tuple[str, ...]) -> _Layout | None:
        """The template rendered once for this role sequence with each text left as a field; None when the template
        does not take texts in unchanged (checked on probe texts) or its own text holds the image placeholder."""
        tok = self.processor.tokenizer
        try:
            rendered = self.template.render([Message(r, f"\x00{i}\x00") for i, r in enumerate(roles)], tok)
        except ValueError:
            return None
        forms, own, seen = [], [], []
        for seg in rendered:
            parts = _SENTINEL.split(seg.text)  # text, index, text, ...
            if any(self.token in p for p in parts[0::2]):
                return None
            seen += [int(i) for i in parts[1::2]]
            form = "".join(
                f"{{{p}}}" if k % 2 else p.replace("{", "{{").replace("}", "}}") for k, p in enumerate(parts)
            )
            forms.append((form, seg.trainable))
            own.append(("".join(parts[0::2]), parts[-1], seg.trainable))  # the template's text, its text at the end
        if seen != list(range(len(roles))):
            return None
        probe = [_PROBE[i % len(_PROBE)] + str(i) * (i % 2) for i in range(len(roles))]
        want = [(s.text, s.trainable) for s in self.template.render([Message(*m) for m in zip(roles, probe)], tok)]
        got = [(form.format(*probe), trained) for form, trained in forms]
        if [g for g in got if g[0]] != want:
            return None
        added = tuple(self.counter.added)
        trains = bool(added) and any(trained and end.endswith(added) for _, end, trained in own)  # e.g. "</s>"
        if not trains and self.counter.never_drops and own:
            trains = bool(own[-1][2] and _PRINTABLE.search(own[-1][0]))  # e.g. "###" ends the text
            if not trains and not self.whole_text:
                trains = any(trained and _PRINTABLE.search(text) for text, _, trained in own)
        return _Layout(tuple(forms), "".join(f for f, _ in forms), trains)
