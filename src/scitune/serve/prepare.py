"""Turn a validated chat-completions request into a `Job`: messages, images, tokens, limits (4xx when refused)."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from PIL import Image

from scitune.data.conversation import Message
from scitune.data.tokenize import encode_prompt
from scitune.infer.generate import Generator
from scitune.model.vlm import VisionLanguageModel
from scitune.serve.batcher import Job
from scitune.serve.config import ServeConfig
from scitune.serve.images import ImageLimits, read_image
from scitune.serve.schema import ApiError, ChatCompletionRequest, ChatMessage

MAX_STOPS = 4


def context_length(model: VisionLanguageModel) -> int | None:
    """The LLM's context (``max_position_embeddings``), or the tokenizer's limit, or None if unknown."""
    n = getattr(model.llm.config, "max_position_embeddings", None)
    if n:
        return int(n)
    m = getattr(model.tokenizer, "model_max_length", None)
    return int(m) if m and m < 10**9 else None


@dataclass
class Prepared:
    """A job ready for the batcher and what the response needs to say about it."""

    job: Job
    prompt_tokens: int


class RequestPreparer:
    """Checks a request against the server's limits and encodes it the way `Generator` does."""

    def __init__(self, model: VisionLanguageModel, cfg: ServeConfig, model_name: str):
        gen = Generator(model)  # the same template, image slots and stop strings as offline generation
        self.model, self.cfg, self.model_name = model, cfg, model_name
        self.template, self.slots, self.template_stops = gen.template, gen.slots, gen.stops
        self.context = context_length(model)
        self.limits = ImageLimits.make(cfg.max_image_bytes, cfg.max_image_pixels, cfg.image_root)
        # requests are prepared in several threads at once; a fast tokenizer may refuse concurrent encode calls
        self._tokenizer_lock = threading.Lock()

    def prepare(self, req: ChatCompletionRequest) -> Prepared:
        """Validate ``req`` and build its `Job` (CPU work: call it off the event loop)."""
        if req.model != self.model_name:
            raise ApiError(
                404, f"model {req.model!r} is not served here; this server serves {self.model_name!r}",
                "model_not_found", "model", type="not_found_error",
            )  # fmt: skip
        unsupported = {
            "presence_penalty": req.presence_penalty not in (None, 0),
            "frequency_penalty": req.frequency_penalty not in (None, 0),
            "logprobs": bool(req.logprobs),
            "seed": req.seed is not None,  # rows of a batch share one random generator
        }
        for param, refused in unsupported.items():
            if refused:
                raise ApiError(400, f"{param} is not supported by this server", "unsupported_parameter", param)
        if req.n > self.cfg.max_n:
            raise ApiError(400, f"n must be at most {self.cfg.max_n}", "invalid_value", "n")
        stops = req.stop_list()
        if len(stops) > MAX_STOPS:
            raise ApiError(400, f"at most {MAX_STOPS} stop sequences are allowed", "invalid_value", "stop")
        messages, urls = self._messages(req.messages)
        images = [read_image(url, self.limits, param) for url, param in urls]
        with self._tokenizer_lock:
            slots = self.slots.for_images([im.size for im in images])  # AnyRes: counts follow each image
            enc = encode_prompt(messages, self.model.tokenizer, self.template, slots)
        if enc.n_images != len(images):  # cannot happen: placeholders in text are refused in _messages
            raise ApiError(400, "image placeholders and images do not match", "invalid_value", "messages")
        prompt_tokens = len(enc.input_ids)
        max_tokens = self._max_tokens(req, prompt_tokens)
        pix = self._pixels(images)
        job = Job(
            input_ids=enc.input_ids,
            pixel_values=pix,
            n=req.n,
            max_tokens=max_tokens,
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            stops=stops,
            stream=req.stream,
            deadline=time.monotonic() + self.cfg.timeout_s,
        )
        return Prepared(job, prompt_tokens)

    def _pixels(self, images: list[Image.Image]) -> Any:
        if not images:
            return None
        return self.model.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def _max_tokens(self, req: ChatCompletionRequest, prompt_tokens: int) -> int:
        asked = req.completion_limit()
        room = self.context - prompt_tokens if self.context else math.inf
        if asked is None:
            if room < 1:
                raise self._too_long(prompt_tokens, 1, "messages")
            return int(min(self.cfg.default_max_tokens, room))
        if asked > room:
            raise self._too_long(prompt_tokens, asked, "max_tokens")
        return asked

    def _too_long(self, prompt_tokens: int, asked: int, param: str) -> ApiError:
        return ApiError(
            400,
            f"This model's maximum context length is {self.context} tokens. However, you requested "
            f"{prompt_tokens + asked} tokens ({prompt_tokens} in the messages, {asked} in the completion). "
            "Please reduce the length of the messages or completion.",
            "context_length_exceeded",
            param,
        )

    def _messages(self, msgs: list[ChatMessage]) -> tuple[list[Message], list[tuple[str, str]]]:
        """Messages in scitune's form, and the image URLs in order with the request field naming each."""
        if msgs[-1].role != "user":
            raise ApiError(400, "the last message must have role 'user'", "invalid_value", "messages")
        out: list[Message] = []
        urls: list[tuple[str, str]] = []
        token = self.slots.placeholder
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
                    if token in text:
                        raise ApiError(
                            400, f"text may not contain {token!r}; send images as image_url parts",
                            "invalid_value", param,
                        )  # fmt: skip
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
