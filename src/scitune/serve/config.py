"""`ServeConfig`: the settings of `scitune serve` (a plain dataclass, so `--help` works without the serve extras)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeConfig:
    """The HTTP server, its batching and its limits."""

    checkpoint: str = ""
    """A scitune checkpoint folder (required)."""
    device: str = "cpu"
    """cpu, cuda, cuda:1, ..."""
    threads: int = 0
    """CPU threads for torch's operators (0 = torch's default); 1 is often fastest for small models on busy CPUs."""
    host: str = "127.0.0.1"
    """Address to bind; anything but loopback exposes the model to the network (a warning is logged)."""
    port: int = 8000
    """TCP port (0 = any free port)."""
    model_name: str = ""
    """Model id that clients send and /v1/models lists (default: the checkpoint folder's name)."""
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
    max_image_bytes: int = 10 * 1024 * 1024
    """Largest encoded image (413 above)."""
    max_image_pixels: int = 4096 * 4096
    """Largest image in pixels, checked from the header before decoding (400 above)."""
    max_images: int = 4
    """Most images in one request."""
    max_n: int = 8
    """Largest ``n`` (choices per request)."""
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
            "--max_image_bytes": self.max_image_bytes > 0,
            "--max_image_pixels": self.max_image_pixels > 0,
            "--max_images": self.max_images >= 0,
            "--max_n": self.max_n >= 1,
            "--default_max_tokens": self.default_max_tokens >= 1,
        }
        bad = [flag for flag, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid serve settings: {', '.join(bad)} out of range")
