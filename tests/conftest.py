"""Test setup: fully offline (hub variables set before transformers is imported, sockets refused)."""

from __future__ import annotations

import json
import os
import random
import socket
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# one intra-op thread here and in every child: the tiny models gain nothing from more, and on shared cores
# spinning threads fight each other (several times slower under load)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("SCITUNE_THREADS", "1")  # what every in-process `scitune` command sets
# the base-weight hash cache of this test session, never the user's ~/.cache/scitune
os.environ["SCITUNE_CACHE_DIR"] = __import__("tempfile").mkdtemp(prefix="scitune-test-cache-")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SCITUNE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any connection to a non-loopback address fails the test."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1") or "/" in host):
            return real_connect(self, address)
        raise OSError(f"network access attempted in a test: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", guarded)


def pytest_sessionstart(session):
    if os.environ.get("CI") == "true" and not SHARED_DATA.is_dir():
        raise pytest.UsageError(f"CI run without the shared data at {SHARED_DATA}: its tests would be skipped")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> dict[str, str]:
    """Tiny CLIP + LLaMA saved as HF folders (loaded back through from_pretrained)."""
    from scitune.model.builders import save_tiny_base

    return save_tiny_base(tmp_path_factory.mktemp("tiny-base"))


COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}


def make_color_records(folder: Path, n: int = 16, seed: int = 0) -> Path:
    """Write ``n`` image-text records (solid-colour images, 'The image is <colour>.') and return the JSONL."""
    from PIL import Image

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        c = list(COLORS)[i % len(COLORS)] if i < len(COLORS) else rng.choice(list(COLORS))
        Image.new("RGB", (40, 40), COLORS[c]).save(folder / f"img{i}.png")
        lines.append(
            {
                "id": f"r{i}",
                "image": f"img{i}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat color is this?"},
                    {"from": "gpt", "value": f"The image is {c}."},
                ],
            }
        )
    path = folder / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


@pytest.fixture
def color_data(tmp_path) -> Path:
    return make_color_records(tmp_path / "data")


def tiny_run_config(
    base: dict[str, str],
    train: str | Path,
    out_dir: str | Path,
    stage: str = "align",
    projector: str = "mlp2x-gelu",
    vision: dict | None = None,
    data: dict | None = None,
    optim: dict | None = None,
    **train_opts,
):
    """A `RunConfig` on the `tiny_base` models: max_length 256, lr 1e-2 without warmup, global batch 4 in micro
    batches of 2, no progress bar; ``vision`` / ``data`` / ``optim`` / ``train_opts`` override those sections."""
    from scitune.config.schema import (
        DataConfig,
        LlmConfig,
        ModelConfig,
        OptimConfig,
        ProjectorConfig,
        RunConfig,
        TrainConfig,
        VisionConfig,
    )

    return RunConfig(
        model=ModelConfig(
            vision=VisionConfig(name="clip", path=base["vision"], **(vision or {})),
            projector=ProjectorConfig(projector),
            llm=LlmConfig(path=base["llm"]),
        ),
        data=DataConfig(train=str(train), **{"max_length": 256, **(data or {})}),
        optim=OptimConfig(**{"lr": 1e-2, "warmup_ratio": 0.0, **(optim or {})}),
        train=TrainConfig(
            **{
                "stage": stage,
                "out_dir": str(out_dir),
                "global_batch_size": 4,
                "micro_batch_size": 2,
                "progress": False,
                **train_opts,
            }  # fmt: skip
        ),
    )


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state; an in-process training run starts from a clean one and leaves one."""
    from accelerate.state import AcceleratorState, GradientState

    def reset():
        AcceleratorState._reset_state(True)
        GradientState._reset_state()

    reset()
    yield
    reset()


def text_processor(tokenizer, template: str = "scitune", tokens_per_image: int = 3):
    """A `Processor` for text-side tests: ``tokenizer``, a chat template, a fixed image-token count, no images."""
    from scitune.processor import ImageTokenRule, Processor

    return Processor(tokenizer, None, template, ImageTokenRule(tokens_per_image))
