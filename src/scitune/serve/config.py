"""`ServeConfig`: the settings of `scitune serve` (a plain dataclass, so `--help` works without the serve extras)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

_CHECKPOINT_FOLDER = re.compile(r"final|step-\d+")


@dataclass
class ServeConfig:
    """The HTTP server, its batching and its limits."""

    checkpoint: str = ""
    """A scitune checkpoint folder (required)."""
    device: str = "cpu"
    """cpu, cuda, cuda:1, ..."""
    threads: int = 0
    """CPU threads for torch's operators (0 = the CPUs not already busy, or $SCITUNE_THREADS)."""
    host: str = "127.0.0.1"
    """Address to bind; anything but loopback exposes the model to the network (a warning is logged)."""
    port: int = 8000
    """TCP port (0 = any free port)."""
    allowed_hosts: list[str] = field(default_factory=list)
    """Host names the Host header may carry, against DNS rebinding (port ignored; '*' = any, '*.example.org' = its
    subdomains). Empty = --host plus localhost, 127.0.0.1 and ::1; any host when --host is a wildcard (0.0.0.0, ::)."""
    served_model_name: str = ""
    """Model id that clients send and /v1/models lists (default: the checkpoint folder's name, or for a training
    run's folders the run's: runs/tiny-align/final -> tiny-align, .../checkpoints/step-000100 ->
    tiny-align-step-000100)."""
    model_name: str = ""
    """Old name of --served_model_name (still accepted)."""
    api_key: str | None = None
    """If set, /v1/* requires 'Authorization: Bearer KEY' (default: the SCITUNE_API_KEY variable, if set)."""
    image_root: str | None = None
    """Folder that local image paths (and file:// URLs) may point into; unset = local paths refused."""
    max_batch_size: int = 8
    """Most sequences generated together (n=2 counts 2); 1 = no batching."""
    max_wait_ms: float = 10.0
    """How long the first request of a batch waits for others to join it."""
    timeout_s: float = 60.0
    """Per-request limit, queueing included; past it the request gets a 408 (or an error event when streaming)."""
    max_body_bytes: int = 20 * 1024 * 1024
    """Largest request body (413 above)."""
    max_text_chars: int = 0
    """Most characters of message text, refused before tokenization (0 = derived: the context length times the
    longest token string in the vocabulary, as no token covers more characters; longer text cannot fit)."""
    header_timeout_s: float = 10.0
    """A connection must send a whole request head within this many seconds of connecting (or of its previous
    response); otherwise it is closed."""
    body_timeout_s: float = 30.0
    """The request body must arrive within this many seconds of the head (408 otherwise)."""
    max_connections: int = 256
    """Most open connections; at the limit a new one closes the oldest connection still waiting for its request
    head, or gets a 503 if every connection is busy."""
    max_queue: int = 64
    """Most requests being prepared or waiting for the batcher; more get a 503 with Retry-After."""
    max_image_bytes: int = 10 * 1024 * 1024
    """Largest encoded image (413 above)."""
    max_image_pixels: int = 4096 * 4096
    """Largest image in pixels, checked from the header before decoding (400 above)."""
    max_images: int = 4
    """Most images in one request."""
    max_request_pixels: int = 4 * 2048 * 2048
    """Most pixels of all images of one request together, checked from the headers before decoding (400 above)."""
    max_n: int = 8
    """Largest ``n`` (choices per request)."""
    max_prompts: int = 32
    """Most prompts in one /v1/completions request (each gets ``n`` choices)."""
    default_max_tokens: int = 256
    """Completion length when a request gives no max_tokens (cut to what the context leaves)."""
    log_level: str = "info"
    """uvicorn's log level."""

    def __post_init__(self) -> None:
        checks = {
            "--port": 0 <= self.port <= 65535,
            "--threads": self.threads >= 0,
            "--max_batch_size": self.max_batch_size >= 1,
            "--max_wait_ms": self.max_wait_ms >= 0,
            "--timeout_s": self.timeout_s > 0,
            "--max_body_bytes": self.max_body_bytes > 0,
            "--max_text_chars": self.max_text_chars >= 0,
            "--header_timeout_s": self.header_timeout_s > 0,
            "--body_timeout_s": self.body_timeout_s > 0,
            "--max_connections": self.max_connections >= 1,
            "--max_queue": self.max_queue >= 1,
            "--allowed_hosts": all(isinstance(h, str) and h.strip() and "/" not in h for h in self.allowed_hosts),
            "--max_image_bytes": self.max_image_bytes > 0,
            "--max_image_pixels": self.max_image_pixels > 0,
            "--max_images": self.max_images >= 0,
            "--max_request_pixels": self.max_request_pixels > 0,
            "--max_n": self.max_n >= 1,
            "--max_prompts": self.max_prompts >= 1,
            "--default_max_tokens": self.default_max_tokens >= 1,
        }
        bad = [flag for flag, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid serve settings: {', '.join(bad)} out of range")
        if self.model_name and self.served_model_name and self.model_name != self.served_model_name:
            raise ValueError("--model_name is the old name of --served_model_name: give one of them")

    def served_name(self) -> str:
        """The model id clients use: ``--served_model_name`` (or ``--model_name``), else `default_model_name`."""
        return self.served_model_name or self.model_name or default_model_name(self.checkpoint)


def default_model_name(checkpoint: str) -> str:
    """A checkpoint's name: its folder's, or the run's for a folder named like the ones training writes ('final',
    'step-000100'), so that every run's checkpoint is not called 'final'."""
    path = Path(os.path.abspath(checkpoint)) if checkpoint else Path()
    if _CHECKPOINT_FOLDER.fullmatch(path.name) and path.parent.name:
        # runs/<run>/final and runs/<run>/checkpoints/step-N
        parent = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return parent.name if path.name == "final" else f"{parent.name}-{path.name}"
    return path.name or "scitune"
