"""A text-only chat model (a judge, an instruction writer) behind an OpenAI-compatible chat-completions endpoint
(standard library HTTP only), with timeouts and bounded retries with exponential backoff. Used by eval/ (judges)
and sources/ (instruction generation)."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["API_KEY_ENV", "JudgeClient", "JudgeError", "ReplyError"]

API_KEY_ENV = "SCITUNE_JUDGE_API_KEY"
"""Environment variable holding the judge endpoint's API key (sent as a Bearer token; none is sent if unset)."""
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
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

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"the endpoint (--judge_url, --llm_url) must be an http(s) address, got {self.url!r}")
        if self.api_key is None:
            self.api_key = os.environ.get(self.api_key_env) or None

    @property
    def endpoint(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"

    def _post(self, body: bytes) -> str:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            data = json.loads(resp.read().decode("utf-8"))
        content = data["choices"][0]["message"]["content"]
        if not isinstance(content, str):
            raise ValueError("reply has no message content")
        return content

    def complete(self, system: str, user: str) -> str:
        """The judge's reply to one (system, user) exchange.

        Raises:
            JudgeError: after ``1 + retries`` failed attempts, or at once on a client error (4xx other than
                408/409/425/429), naming the last problem.
        """
        return self.chat([{"role": "system", "content": system}, {"role": "user", "content": user}])

    def chat(self, messages: list[dict[str, str]], parse: Callable[[str], T] | None = None) -> Any:
        """The reply to a whole message list (``[{"role", "content"}, ...]``, e.g. few-shot exchanges), passed
        through ``parse`` when given: a `ReplyError` from it counts as a failed attempt and the request is retried.

        Raises:
            JudgeError: after ``1 + retries`` failed attempts, or at once on a client error (4xx other than
                408/409/425/429), naming the last problem.
        """
        body = json.dumps(
            {
                "model": self.model,
                "messages": messages,
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
            }
        ).encode("utf-8")
        last = ""
        for attempt in range(self.retries + 1):
            try:
                reply = self._post(body)
                return parse(reply) if parse is not None else reply
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code} {e.reason}"
                if e.code not in _RETRY_STATUS:
                    break
            except (urllib.error.URLError, TimeoutError, OSError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            except ReplyError as e:
                last = f"unusable reply: {e}"
            except (ValueError, KeyError, IndexError, TypeError) as e:
                last = f"malformed reply: {type(e).__name__}: {e}"
            if attempt < self.retries:
                time.sleep(self.backoff * 2**attempt)
        raise JudgeError(f"{self.endpoint}: {last} (after {attempt + 1} attempt(s))")
