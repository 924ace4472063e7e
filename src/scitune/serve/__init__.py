"""`scitune serve`: an OpenAI-compatible HTTP API with request batching, and a chat page.

Import `scitune.serve.app` for the server itself (it needs the ``serve`` extras: fastapi, uvicorn).
"""

from scitune.serve.config import ServeConfig

__all__ = ["ServeConfig"]
