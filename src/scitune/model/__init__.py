"""Model side: vision encoders, projectors, LLM loading, the composed `VisionLanguageModel`, checkpoint files.

`scitune.loader` loads or builds a model together with its processor."""

from scitune.model.builders import save_tiny_base, tiny_tokenizer
from scitune.model.llm import LLMS
from scitune.model.projector import PROJECTORS
from scitune.model.vision import VISION_ENCODERS
from scitune.model.vlm import VisionLanguageModel

__all__ = ["LLMS", "PROJECTORS", "VISION_ENCODERS", "VisionLanguageModel", "save_tiny_base", "tiny_tokenizer"]
