"""Turn a validated chat-completions request into a `Job`: messages, images, tokens, limits (4xx when refused); the
checks both endpoints share (model, ``n``, stops, ignored fields)."""

from __future__ import annotations

import copy
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from scitune.data.conversation import Message
from scitune.model.vlm import VisionLanguageModel
from scitune.processor import Processor
from scitune.serve.batcher import Job
from scitune.serve.config import ServeConfig
from scitune.serve.images import ImageLimits, load_rgb, open_image
from scitune.serve.schema import ApiError, ChatCompletionRequest, ChatMessage, CompletionRequest

log = logging.getLogger(__name__)

MAX_STOPS = 4
"""Stop strings per chat request, as OpenAI allows."""


def text_char_limit(tokenizer: Any, context: int | None) -> int:
    """Most characters of message text that can fit in ``context`` tokens (0 = unknown context: no limit).

    A token never covers more characters than its string in the vocabulary has: byte-level BPE spells one
    character per byte, SentencePiece one '▁' per space and '<0x41>' for one byte. So text with more characters than
    ``context`` x the longest token string cannot fit, and is refused before anything is tokenized.
    """
    if not context:
        return 0
    longest = max((len(t) for t in tokenizer.get_vocab()), default=1)
    if _folds_characters(tokenizer):
        log.warning(
            "the tokenizer has an unknown-word token or drops whitespace, so one token may cover more characters "
            "than it spells; the derived text limit (%d characters) could refuse text that fits: set --max_text_chars",
            context * longest,
        )
    return context * max(longest, 1)


def _folds_characters(tokenizer: Any) -> bool:
    """True when a token can stand for an unbounded run of characters (the bound above does not hold)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    unknown = (model.get("unk_token") is not None or model.get("unk_id") is not None) and not model.get("byte_fallback")
    pre = json.dumps(spec.get("pre_tokenizer"))
    return unknown or any(name in pre for name in ('"Whitespace"', '"WhitespaceSplit"', '"BertPreTokenizer"'))


class ThreadCopies:
    """A copy of the processor (its tokenizer) per thread, made on first use, so requests tokenize in parallel
    without a lock.

    HF fast tokenizers wrap one Rust object that raises 'Already borrowed' when two threads use it at once (encoding
    may set its truncation/padding state). A lock around it made every request wait for the longest one (a 10 MB
    prompt stalled all others for seconds); each thread's own copy needs none, and the Rust encoder releases the GIL.
    """

    def __init__(self, source: Any):
        self.source = source
        self._local = threading.local()
        self._copying = threading.Lock()  # guards only the copying (a few ms per thread, once), never tokenizing

    def get(self) -> Any:
        """This thread's copy."""
        tok = getattr(self._local, "copy", None)
        if tok is None:
            with self._copying:
                tok = copy.deepcopy(self.source)
            self._local.copy = tok
        return tok


@dataclass
class Prepared:
    """A job ready for the batcher and what the response needs to say about it."""

    job: Job
    prompt_tokens: int
    ignored: list[str] = field(default_factory=list)
    """Request fields set but ignored (the ``X-Scitune-Ignored`` header)."""


class RequestPreparer:
    """Checks a request against the server's limits and encodes it with the processor, as offline generation does."""

    def __init__(self, model: VisionLanguageModel, processor: Processor, cfg: ServeConfig, model_name: str):
        self.model, self.processor, self.cfg, self.model_name = model, processor, cfg, model_name
        self.template_stops = processor.stop_strings()
        self.context = model.context_length
        self.limits = ImageLimits.make(cfg.max_image_bytes, cfg.max_image_pixels, cfg.image_root)
        self.max_text_chars = cfg.max_text_chars or text_char_limit(processor.tokenizer, self.context)
        self.processors = ThreadCopies(processor)  # requests are prepared in several threads at once

    def check(self, req: ChatCompletionRequest | CompletionRequest, max_stops: int) -> list[str]:
        """The checks both endpoints share (model, ``n``, stops); returns the stop strings."""
        if req.model != self.model_name:
            # OpenAI's answer to an unknown model (404, model_not_found), naming the one served here, as vLLM does
            raise ApiError(
                404,
                f"The model `{req.model}` does not exist. This server serves `{self.model_name}`.",
                "model_not_found",
                "model",
            )
        if req.n > self.cfg.max_n:
            raise ApiError(400, f"n must be at most {self.cfg.max_n}", "invalid_value", "n")
        stops = req.stop_list()
        if len(stops) > max_stops:
            raise ApiError(400, f"at most {max_stops} stop sequences are allowed", "invalid_value", "stop")
        return stops

    def prepare(self, req: ChatCompletionRequest) -> Prepared:
        """Validate ``req`` and build its `Job` (CPU work: call it off the event loop)."""
        stops = self.check(req, MAX_STOPS)
        if req.top_logprobs and not req.logprobs:
            raise ApiError(400, "top_logprobs needs logprobs: true", "invalid_value", "top_logprobs")
        messages, urls = self._messages(req.messages)
        opened = [open_image(url, self.limits, param) for url, param in urls]  # headers only: sizes, no pixels
        pixels = sum(im.size[0] * im.size[1] for im in opened)
        if pixels > self.cfg.max_request_pixels:
            raise ApiError(
                400,
                f"the images of this request have {pixels} pixels in all; the limit is {self.cfg.max_request_pixels}",
                "too_many_pixels",
                "messages",
            )
        # AnyRes: counts follow each image's size (placeholders typed into the text are refused in _messages)
        enc = self.processors.get().encode(messages, [im.size for im in opened], prompt=True)
        prompt_tokens = len(enc.input_ids)
        max_tokens = self._max_tokens(req, prompt_tokens)
        pix, grids = self._pixels(opened, [param for _, param in urls])  # decoded last, once every check passed
        job = Job(
            input_ids=enc.input_ids,
            pixel_values=pix,
            image_grids=grids,
            seed=req.seed,
            n=req.n,
            max_tokens=max_tokens,
            **req.sampling(),
            stops=stops,
            logprobs=(req.top_logprobs or 0) if req.logprobs else None,
            stream=req.stream,
            deadline=time.monotonic() + self.cfg.timeout_s,
        )
        return Prepared(job, prompt_tokens, req.ignored_fields())

    def _pixels(self, opened: list[Image.Image], params: list[str]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The pixel tensor of a request's images, (n_tiles, C, H, W), decoding one image at a time, and with AnyRes
        their ``image_grids`` (one row per image, as the processor gives them).

        A decoded image (up to max_image_pixels x 3 bytes) is dropped as soon as its pixels are processed, so a
        request holds at most one at a time; the processors put each image's tiles on dim 0, so processing image by
        image gives the same tensor as processing them together.
        """
        if not opened:
            return None, None
        parts, grids = [], []
        for param in params:
            image = load_rgb(opened.pop(0), param)  # the opened (undecoded) image goes too
            out = self.processor.images([image])
            parts.append(out["pixel_values"])
            if "image_grids" in out:
                grids.append(out["image_grids"])
            del image
        return torch.cat(parts), torch.cat(grids) if grids else None

    def _max_tokens(self, req: ChatCompletionRequest | CompletionRequest, prompt_tokens: int) -> int:
        asked = req.completion_limit()
        room = self.context - prompt_tokens if self.context else math.inf
        what = "messages" if isinstance(req, ChatCompletionRequest) else "prompt"
        if asked is None:
            if room < 1:
                raise self._too_long(prompt_tokens, 1, what, what)
            return int(min(self.cfg.default_max_tokens, room))
        if asked > room:
            raise self._too_long(prompt_tokens, asked, "max_tokens", what)
        return asked

    def _too_long(self, prompt_tokens: int, asked: int, param: str, what: str = "messages") -> ApiError:
        return ApiError(
            400,
            f"This model's maximum context length is {self.context} tokens. However, you requested "
            f"{prompt_tokens + asked} tokens ({prompt_tokens} in the {what}, {asked} in the completion). "
            f"Please reduce the length of the {what} or completion.",
            "context_length_exceeded",
            param,
        )

    def _too_much_text(self, chars: int, what: str = "messages") -> ApiError:
        context = f"this model's context of {self.context} tokens" if self.context else "this server"
        return ApiError(
            400,
            f"The {what} hold at least {chars} characters of text, more than the {self.max_text_chars} that can fit "
            f"in {context}. Please reduce the length of the {what}.",
            "context_length_exceeded",
            what,
        )

    def _messages(self, msgs: list[ChatMessage]) -> tuple[list[Message], list[tuple[str, str]]]:
        """Messages in scitune's form, and the image URLs in order with the request field naming each."""
        if msgs[-1].role != "user":
            raise ApiError(400, "the last message must have role 'user'", "invalid_value", "messages")
        out: list[Message] = []
        urls: list[tuple[str, str]] = []
        token = self.processor.image_token
        chars = 0
        for i, m in enumerate(msgs):
            role = "system" if m.role == "developer" else m.role
            if role == "system" and i > 0:
                raise ApiError(400, "a system message may only come first", "invalid_value", f"messages.{i}.role")
            parts = [m.content] if isinstance(m.content, str) else m.content
            pieces: list[str] = []
            for j, part in enumerate(parts):
                param = f"messages.{i}.content" + ("" if isinstance(m.content, str) else f".{j}")
                text = part if isinstance(part, str) else getattr(part, "text", None)
                if text is not None:
                    chars += len(text)
                    if self.max_text_chars and chars > self.max_text_chars:
                        raise self._too_much_text(chars)
                    if token in text:
                        raise ApiError(
                            400,
                            f"text may not contain {token!r}; send images as image_url parts",
                            "invalid_value",
                            param,
                        )
                    pieces.append(text)
                elif role != "user":
                    raise ApiError(400, "only user messages may contain images", "invalid_value", param)
                else:
                    urls.append((part.image_url.url, param + ".image_url"))
                    pieces.append(token)
            out.append(Message(role, "\n".join(pieces)))
            if len(urls) > self.cfg.max_images:
                raise ApiError(
                    400, f"too many images: at most {self.cfg.max_images} per request", "too_many_images", "messages"
                )
        return out, urls
