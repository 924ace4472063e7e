"""The text of one generated sequence: decoding, EOS and stop strings, and the part of it that is safe to stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def text_decoder(tokenizer: Any) -> Callable[[list[int]], str]:
    """ids -> text without special tokens and without clean-up of spaces, as
    ``tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)``.

    For a fast tokenizer whose class keeps transformers' own ``decode``/``_decode`` this calls the Rust tokenizer
    directly (the same text, without the wrapper's per-call overhead: a stream decodes every row at every step).
    """
    backend, base = getattr(tokenizer, "_tokenizer", None), None
    try:  # transformers 5.x
        from transformers.tokenization_utils_tokenizers import TokenizersBackend as base
    except ImportError:  # transformers 4.x
        try:
            from transformers import PreTrainedTokenizerFast as base
        except ImportError:
            pass
    cls = type(tokenizer)
    if base is not None and isinstance(tokenizer, base) and hasattr(backend, "decode"):
        if cls.decode is base.decode and cls._decode is base._decode:
            return lambda ids: backend.decode(ids, skip_special_tokens=True)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


class TextStream:
    """Decodes a sequence's generated ids, ends it at EOS or a stop string, and streams only text that cannot change.

    Args:
        decode: ids -> text, without clean-up of spaces (clean-up could rewrite text already streamed when later
            tokens arrive).
        eos: token ids that end the sequence (not part of its text).
        stops: strings that end the text (cut before them).
        on_delta: called with each new piece of safe text, in order; the pieces concatenate to the final text.
        strip: strip surrounding whitespace from the text (a chat reply); False keeps the text as generated (a raw
            completion).
    """

    def __init__(
        self,
        decode: Callable[[list[int]], str],
        eos: set[int],
        stops: list[str],
        on_delta: Callable[[str], None] | None = None,
        strip: bool = True,
    ):
        self.decode, self.eos, self.on_delta, self.strip = decode, eos, on_delta, strip
        self.stops = [s for s in stops if s]
        self.text = ""  # visible text so far (cut at a stop string)
        self.streamed = ""  # the part already handed to on_delta

    def push(self, ids: list[int]) -> bool:
        """Look at all ids generated so far; True when EOS or a stop string ended the text."""
        if ids and ids[-1] in self.eos:
            self.text = self._visible(self.decode(ids[:-1]))[0]
            return True
        self.text, hit = self._visible(self.decode(ids))
        return hit

    def flush(self) -> None:
        """Stream what is safe of the text so far (the sequence goes on)."""
        if self.on_delta is not None:
            self._stream(self.safe(self.text))

    def finish(self) -> str:
        """The final text (stripped unless ``strip`` is off); the rest of it is streamed."""
        final = self.text.strip() if self.strip else self.text
        if self.on_delta is not None:
            self._stream(final)
        return final

    def _visible(self, text: str) -> tuple[str, bool]:
        cut = min((i for s in self.stops if (i := text.find(s)) >= 0), default=-1)
        text = text[:cut] if cut >= 0 else text
        return text.lstrip() if self.strip else text, cut >= 0

    def safe(self, text: str) -> str:
        """``text`` without what may still change: trailing whitespace (when stripped at the end), a partial UTF-8
        character, and a tail that could be the start of a stop string."""
        safe, prev = text, None
        while safe != prev:  # until stable: removing a stop prefix can uncover more whitespace
            prev = safe
            safe = (safe.rstrip() if self.strip else safe).rstrip("\ufffd")
            for s in self.stops:
                for k in range(min(len(s) - 1, len(safe)), 0, -1):
                    if safe.endswith(s[:k]):
                        safe = safe[:-k]
                        break
        return safe

    def _stream(self, safe: str) -> None:
        assert self.on_delta is not None
        if len(safe) > len(self.streamed) and safe.startswith(self.streamed):
            self.on_delta(safe[len(self.streamed) :])
            self.streamed = safe
