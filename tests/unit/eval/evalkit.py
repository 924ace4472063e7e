"""Helpers shared by the eval tests: a tiny checkpoint (with a base LLM folder), a small SciFig set, PNG check."""

from __future__ import annotations

from pathlib import Path


def make_checkpoint(root: Path) -> dict[str, str]:
    """A tiny VLM checkpoint whose LLM was changed from its base LLM (saved as an HF folder, recorded in
    scitune.json), so checkpoint-vs-base comparisons see two different models."""
    import torch

    from scitune.config.schema import LlmConfig, ModelConfig, ProjectorConfig, VisionConfig
    from scitune.loader import build, save_checkpoint
    from scitune.model.builders import save_tiny_base

    paths = save_tiny_base(root / "base")
    cfg = ModelConfig(
        vision=VisionConfig(name="clip", path=paths["vision"]),
        llm=LlmConfig(path=paths["llm"]),
        projector=ProjectorConfig(name="mlp2x-gelu"),
    )
    model, processor = build(cfg)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.llm.parameters():
            p.add_(0.2 * torch.randn_like(p))
    ck = save_checkpoint(model, processor, root / "ck")
    return {"checkpoint": str(ck), "llm": paths["llm"]}


_SESSION: dict[str, dict[str, str]] = {}


def session_checkpoint(tmp_path_factory) -> dict[str, str]:
    """`make_checkpoint` once per test session (the eval test modules share it; nothing writes into it)."""
    if "ck" not in _SESSION:
        _SESSION["ck"] = make_checkpoint(tmp_path_factory.mktemp("eval-ck"))
    return _SESSION["ck"]


def make_scifig(root: Path) -> Path:
    """6 SciFig test figures (64 px, every type) with their ScienceQA-style questions."""
    from scitune.sources.scifig import SciFigConfig, generate_scifig

    generate_scifig(root, SciFigConfig(n_train=0, n_val=0, n_test=6, image_size=64), progress=False)
    return root


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
