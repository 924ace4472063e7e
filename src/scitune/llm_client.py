"""A text-only chat model (a judge, an instruction writer) behind an OpenAI-compatible chat-completions endpoint,
reached through the official ``openai`` client (extra ``eval``), with timeouts and bounded retries with exponential
backoff. Used by eval/ (judges) and sources/ (instruction generation)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["API_KEY_ENV", "JudgeClient", "JudgeError", "ReplyError"]

API_KEY_ENV = "SCITUNE_JUDGE_API_KEY"
"""Environment variable holding the judge endpoint's API key (sent as a Bearer token; none is sent if unset)."""
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
_NO_KEY = "no-key"
"""Placeholder for the ``openai`` client, which insists on a key; the Authorization header is then left out."""
T = TypeVar("T")


class JudgeError(RuntimeError):
    """The judge endpoint failed for one item (after the retries)."""


class ReplyError(ValueError):
    """Raised by a `JudgeClient.chat` ``parse`` callback: the reply arrived but cannot be used (malformed, a
    refusal); the request is retried like a transport failure."""


@dataclass
class JudgeClient:
    """Posts chat completions to ``url`` (a base such as ``http://host:8000/v1`` or the full
    ``.../chat/completions`` address). Stateless between calls, so one client may serve several threads.

    Args:
        url: the endpoint.
        model: the judge model name sent in the request.
        api_key: bearer token; default: the `API_KEY_ENV` environment variable, if set.
        timeout: seconds allowed for connecting and for each read of the reply.
        retries: further attempts after a failed one (connection error, timeout, 408/429/5xx, malformed reply).
        backoff: seconds before the first retry, doubled for each next one.
        temperature: sampling temperature (LLaVA's judge uses 0.2).
        max_tokens: reply length limit (LLaVA: 1024).
        api_key_env: environment variable read for the key when ``api_key`` is None (e.g. ``SCITUNE_LLM_API_KEY``
            for instruction generation).
    """

    url: str
    model: str
    api_key: str | None = None
    timeout: float = 60.0
    retries: int = 4
    backoff: float = 1.0
    temperature: float = 0.2
    max_tokens: int = 1024
    api_key_env: str = API_KEY_ENV
    _client: Any = field(init=False, repr=False, compare=False, default=None)
    _omit_auth: dict[str, Any] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"the endpoint (--judge_url, --llm_url) must be an http(s) address, got {self.url!r}")
        if self.api_key is None:
            self.api_key = os.environ.get(self.api_key_env) or None
        from scitune.extras import load

        openai = load("the LLM judge", "openai")
        # the retries are this class's own (its backoff, its status list, and `ReplyError`s from ``parse``), so the
        # openai client must not retry underneath them; it is thread-safe, so one client serves all threads
        self._client = openai.OpenAI(
            base_url=self.base_url, api_key=self.api_key or _NO_KEY, timeout=self.timeout, max_retries=0
        )
        self._omit_auth = {} if self.api_key else {"Authorization": openai.Omit()}

    @property
    def base_url(self) -> str:
        """The API base the client posts to: ``url`` without a trailing ``/chat/completions``."""
        base = self.url.rstrip("/")
        return base.removesuffix("/chat/completions")

    @property
    def endpoint(self) -> str:
        return self.base_url + "/chat/completions"

    def _post(self, messages: list[dict[str, str]]) -> str:
        completion = self._client.chat.completions.create(
            model=self.model,
            messages=messages,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            extra_headers=self._omit_auth,
        )
        try:  # a lenient parse: a server's reply without choices or content is a malformed reply, retried
            content = completion.choices[0].message.content
        except (AttributeError, IndexError, TypeError, KeyError):
            content = None
        if not isinstance(content, str):
            raise ValueError("reply has no message content")
        return content

    def complete(self, system: str, user: str) -> str:
        """The judge's reply to one (system, user) exchange.

        Raises:
            JudgeError: after ``1 + retries`` failed attempts, or at once on a client error (4xx other than
                408/409/425/429), naming the last problem (for an HTTP error: the status and the server's message).
        """
        return self.chat([{"role": "system", "content": system}, {"role": "user", "content": user}])

    def chat(self, messages: list[dict[str, str]], parse: Callable[[str], T] | None = None) -> Any:
        """The reply to a whole message list (``[{"role", "content"}, ...]``, e.g. few-shot exchanges), passed
        through ``parse`` when given: a `ReplyError` from it counts as a failed attempt and the request is retried.

        Raises:
            JudgeError: after ``1 + retries`` failed attempts, or at once on a client error (4xx other than
                408/409/425/429), naming the last problem (for an HTTP error: the status and the server's message).
        """
        import openai

        last = ""
        for attempt in range(self.retries + 1):
            try:
                reply = self._post(messages)
                return parse(reply) if parse is not None else reply
            except openai.APIStatusError as e:
                last = _status_problem(e)
                if e.status_code not in _RETRY_STATUS:
                    break
            except openai.APIResponseValidationError as e:
                last = f"malformed reply: {e}"
            except openai.APITimeoutError:
                last = f"timed out after {self.timeout:g} s"
            except openai.APIConnectionError as e:
                last = f"{type(e).__name__}: {e.__cause__ or e}"
            except ReplyError as e:
                last = f"unusable reply: {e}"
            except (ValueError, KeyError, IndexError, TypeError) as e:
                last = f"malformed reply: {type(e).__name__}: {e}"
            if attempt < self.retries:
                time.sleep(self.backoff * 2**attempt)
        raise JudgeError(f"{self.endpoint}: {last} (after {attempt + 1} attempt(s))")


def _status_problem(error: Any) -> str:
    """``HTTP 404 Not Found: <the server's message>`` of an ``openai.APIStatusError``.

    The ``openai`` client keeps the reply's JSON ``error`` object (or the whole body) in ``error.body``; OpenAI,
    vLLM and ``scitune serve`` put the human-readable text in its ``message``.
    """
    reason = getattr(error.response, "reason_phrase", "") or ""
    body = error.body
    if isinstance(body, dict):
        detail = body.get("message") or body.get("detail") or json.dumps(body, ensure_ascii=False)
    elif body is None:
        detail = error.response.text if error.response is not None else ""
    else:
        detail = str(body)
    detail = str(detail).strip()
    head = f"HTTP {error.status_code} {reason}".rstrip()
    return f"{head}: {detail[:500]}" if detail else head
