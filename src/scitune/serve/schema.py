"""Request and response models of the OpenAI chat-completions and (legacy) completions APIs, validated strictly.

Fields that OpenAI clients and harnesses send but scitune cannot honour are accepted and ignored; `ignored_fields`
names those a request set to anything but their default (the server says so in its ``X-Scitune-Ignored`` header).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError


class _Strict(BaseModel):
    # unknown fields are errors (a typo must not be ignored silently); no "5" -> 5 coercion
    model_config = ConfigDict(extra="forbid", strict=True)


class ImageURL(_Strict):
    """An image: a base64 ``data:`` URL, or a path / ``file://`` URL under the server's image root."""

    url: str
    detail: Literal["auto", "low", "high"] | None = None


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]
    name: str | None = None
    type: str | None = None
    """Ignored: lm-evaluation-harness 0.4.9's chat model sends ``"type": "text"`` on every message."""


class StreamOptions(_Strict):
    include_usage: bool = False
    include_obfuscation: bool | None = None
    """Ignored: nothing is padded for obfuscation."""
    continuous_usage_stats: bool | None = None
    """vLLM's usage in every chunk: ignored (usage comes in the last chunk, with include_usage)."""


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


Seed = Annotated[int, Field(ge=-(2**63), le=2**64 - 1)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
Bias = Annotated[float, Field(ge=-100.0, le=100.0)]


def _at_default(name: str, value: Any, req: BaseModel) -> bool:
    """True when an ignored field's value asks for nothing (unset, empty, zero, or what scitune does anyway)."""
    if value is None or value is False or value == 0 or value in ("", [], {}):
        return True
    if name == "response_format":
        return value.type == "text"
    if name == "tool_choice":
        return value in ("none", "auto") and not getattr(req, "tools", None)
    if name == "parallel_tool_calls":
        return not getattr(req, "tools", None)
    if name == "repetition_penalty":
        return value == 1.0
    if name == "best_of":
        return value in (1, getattr(req, "n", 1))
    if name == "service_tier":
        return value in ("auto", "default")
    if name == "stream_options":
        return not value.continuous_usage_stats
    return False


class _OpenAIRequest(_Strict):
    """What both endpoints share: the sampling settings honoured, and fields accepted but ignored."""

    IGNORED: ClassVar[tuple[str, ...]] = (
        "logit_bias",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "min_p",
        "user",
        "service_tier",
        "stream_options",
    )

    model: str
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1)
    """Sample among the k most likely tokens only (vLLM's extension; -1 or 0 = no limit)."""
    seed: Seed | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, Bias] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    user: str | None = None
    service_tier: str | None = None

    def stop_list(self) -> list[str]:
        """The stop strings as a list (empty strings dropped)."""
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]

    def ignored_fields(self) -> list[str]:
        """The fields this request sets that the server ignores (unset, empty or default values not counted)."""
        return [f for f in self.IGNORED if not _at_default(f, getattr(self, f), self)]

    def sampling(self) -> dict[str, Any]:
        """Temperature (default 1.0, as OpenAI's), top-p and top-k (0 = off) for the `Job`."""
        return {
            "temperature": 1.0 if self.temperature is None else self.temperature,
            "top_p": 1.0 if self.top_p is None else self.top_p,
            "top_k": max(self.top_k or 0, 0),
        }


class ChatCompletionRequest(_OpenAIRequest):
    """``POST /v1/chat/completions`` body."""

    IGNORED: ClassVar[tuple[str, ...]] = _OpenAIRequest.IGNORED + (
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "functions",
        "function_call",
        "store",
        "metadata",
        "modalities",
        "audio",
        "prediction",
        "reasoning_effort",
        "verbosity",
        "web_search_options",
        "prompt_cache_key",
        "safety_identifier",
    )

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    # accepted and ignored (see IGNORED)
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    web_search_options: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None

    def completion_limit(self) -> int | None:
        """``max_completion_tokens`` (the newer name) or ``max_tokens``."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


def _prompt_list(value: Any) -> list[str | list[int]]:
    """OpenAI's prompt forms (a text, token ids, or a list of either; mixed lists allowed) as a list of prompts."""

    def tokens(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(t, int) and not isinstance(t, bool) for t in v)

    if isinstance(value, str) or tokens(value):
        value = [value]
    elif not isinstance(value, list):
        raise PydanticCustomError("invalid_prompt", "prompt must be a string, a list of token ids, or a list of those")
    for i, p in enumerate(value):
        if not (isinstance(p, str) or tokens(p)):
            msg = "prompt {i}: not a string or a non-empty list of token ids"
            raise PydanticCustomError("invalid_prompt", msg, {"i": i})
        if not isinstance(p, str) and min(p) < 0:
            raise PydanticCustomError("invalid_prompt", "prompt {i}: token ids must be >= 0", {"i": i})
    return list(value)


class CompletionRequest(_OpenAIRequest):
    """``POST /v1/completions`` body (OpenAI's legacy completions: plain prompts, no chat template)."""

    IGNORED: ClassVar[tuple[str, ...]] = _OpenAIRequest.IGNORED + ("suffix", "best_of")

    prompt: Annotated[Any, AfterValidator(_prompt_list)]
    """A text, a list of token ids, or a list of either (``n`` choices per prompt); validated into a list."""
    max_tokens: int | None = Field(default=16, ge=0)
    """16 by default, as OpenAI's; 0 with ``echo`` scores the prompt without generating."""
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=20)
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1)

    def completion_limit(self) -> int | None:
        return self.max_tokens

    def prompt_list(self) -> list[str | list[int]]:
        """The prompts, each a text or a list of token ids."""
        return self.prompt


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None
    refusal: None = None


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: ChoiceLogprobs | None = None


def completion_id(prefix: str = "chatcmpl-") -> str:
    return prefix + uuid.uuid4().hex


class CompletionLogprobs(BaseModel):
    """The legacy logprobs shape: parallel lists over the choice's tokens (the prompt's first, with ``echo``)."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None


class TextCompletion(BaseModel):
    """A whole (non-streamed) legacy completion."""

    id: str = Field(default_factory=lambda: completion_id("cmpl-"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ChatCompletion(BaseModel):
    """A whole (non-streamed) completion."""

    id: str = Field(default_factory=completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "scitune"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ApiError(Exception):
    """A request the server refuses: becomes an HTTP ``status`` with an `ErrorResponse` body."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.type = status, message, code, param, type
        self.headers = headers
        """Extra response headers, e.g. ``Retry-After`` on a 503 or ``Connection: close`` when the body is unread."""

    def body(self) -> dict:
        return ErrorResponse(
            error=ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code)
        ).model_dump()


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorDetail
