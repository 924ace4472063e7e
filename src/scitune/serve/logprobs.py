"""The engine's log-probability entries (`TokenLogprob`) in OpenAI's two shapes: chat's ``logprobs.content`` list and
the legacy completions' parallel lists (``tokens``, ``token_logprobs``, ``top_logprobs``, ``text_offset``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from scitune.infer.requests import TokenLogprob
from scitune.serve.schema import ChatTokenLogprob, CompletionLogprobs, TopLogprob

WINDOW = 4
"""Tokens of context decoded before a token to spell it (enough for SentencePiece's spaces and split characters)."""


class TokenSpeller:
    """Spells token ids the way they read in their text.

    A token's text is what decoding it after its predecessors adds (SentencePiece drops a word's leading space when
    a token is decoded alone); special tokens (BOS, EOS) show their name and add nothing to the text. A character
    split over several byte-level tokens shows as U+FFFD in the tokens before the one that completes it.
    Alternatives (``top``) are spelled alone.

    Args:
        tokenizer: the checkpoint's tokenizer (a per-thread copy: spelling runs in the server's worker threads).
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.special = set(getattr(tokenizer, "all_special_ids", []) or [])
        self._alone: dict[int, str] = {}

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def pieces(self, ids: Sequence[int], before: Sequence[int] = ()) -> list[tuple[str, int]]:
        """``(shown string, characters it adds to the text)`` per id of ``ids``, which follow ``before``."""
        seq = [*before, *ids]
        out = []
        for i in range(len(before), len(seq)):
            t = seq[i]
            if t in self.special:
                out.append((self.alone(t), 0))
                continue
            head, whole = self._decode(seq[max(0, i - WINDOW) : i]), self._decode(seq[max(0, i - WINDOW) : i + 1])
            common = len(os.path.commonprefix([head, whole]))
            out.append((whole[common:], max(len(whole) - len(head), 0)))
        return out

    def alone(self, token_id: int) -> str:
        """The token decoded by itself (special tokens by their name)."""
        s = self._alone.get(token_id)
        if s is None:
            s = self.tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            self._alone[token_id] = s
        return s


def chat_content(
    speller: TokenSpeller, entries: Sequence[TokenLogprob], before: Sequence[int] = ()
) -> list[dict[str, Any]]:
    """Chat's ``choices[i].logprobs.content``: one ``{token, logprob, bytes, top_logprobs}`` per entry."""
    out = []
    for e, (shown, _) in zip(entries, speller.pieces([e.token_id for e in entries], before)):
        top = [_top(speller.alone(t) if t != e.token_id else shown, lp) for t, lp in e.top]
        out.append(ChatTokenLogprob(**_top(shown, e.logprob).model_dump(), top_logprobs=top).model_dump())
    return out


def _top(token: str, logprob: float) -> TopLogprob:
    return TopLogprob(token=token, logprob=_finite(logprob), bytes=list(token.encode("utf-8")))


def _finite(x: float) -> float:
    # JSON has no -inf: a token the model gives no probability at all gets the lowest finite float, as vLLM sends
    return x if x > -1e38 else -9999.0


class LegacyLogprobs:
    """Builds the legacy shape for one choice, piece by piece (prompt, then generated tokens, in stream order).

    ``text_offset`` is where each token starts in the choice's text (for a stream, in all of its chunks' text);
    the first prompt token has no log-probability (``null``), as in OpenAI's API.
    """

    def __init__(self, speller: TokenSpeller, before: Sequence[int] = ()):
        self.speller, self.offset = speller, 0
        self.ids: list[int] = list(before)[-WINDOW:]  # what the next tokens are spelled after

    def add(self, entries: Sequence[TokenLogprob | None], ids: Sequence[int] | None = None) -> CompletionLogprobs:
        """The shape of ``entries`` (a prompt's entries carry ``ids``: the first entry is None)."""
        ids = list(ids) if ids is not None else [e.token_id for e in entries if e is not None]
        out = CompletionLogprobs()
        for t, e, (shown, width) in zip(ids, entries, self.speller.pieces(ids, self.ids[-WINDOW:])):
            out.tokens.append(shown)
            out.text_offset.append(self.offset)
            self.offset += width
            if e is None:
                out.token_logprobs.append(None)
                out.top_logprobs.append(None)
                continue
            top = {shown if a == t else self.speller.alone(a): _finite(lp) for a, lp in e.top}
            top.setdefault(shown, _finite(e.logprob))  # the chosen token is always there, as in OpenAI's API
            out.token_logprobs.append(_finite(e.logprob))
            out.top_logprobs.append(top)
        self.ids = (self.ids + ids)[-WINDOW:]
        return out

    def skip_to(self, offset: int) -> None:
        """Continue offsets from ``offset`` (after a prompt whose text is given as sent)."""
        self.offset = offset
