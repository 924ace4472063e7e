"""scitune: multimodal instruction tuning of large language models (SciTune, LLaVA, MAGMA, LiMBeR)."""

__version__ = "0.1.0"
