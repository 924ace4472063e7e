"""Model side: vision encoders, projectors, LLM loading, the composed `VisionLanguageModel`, checkpoints."""

from scitune.model.builders import build_model, save_tiny_base, tiny_tokenizer, tiny_vlm
from scitune.model.checkpoint import load_model
from scitune.model.llm import LLMS
from scitune.model.projector import PROJECTORS
from scitune.model.vision import VISION_ENCODERS
from scitune.model.vlm import VisionLanguageModel

__all__ = [
    "LLMS",
    "PROJECTORS",
    "VISION_ENCODERS",
    "VisionLanguageModel",
    "build_model",
    "load_model",
    "save_tiny_base",
    "tiny_tokenizer",
    "tiny_vlm",
]
