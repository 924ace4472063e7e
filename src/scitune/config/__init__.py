"""Typed configuration (dataclasses), YAML presets and their loading."""

from scitune.config.schema import (
    DataConfig,
    GenerationConfig,
    LlmConfig,
    LoraConfig,
    ModelConfig,
    OptimConfig,
    ProjectorConfig,
    RunConfig,
    TrainConfig,
    VisionConfig,
)

__all__ = [
    "DataConfig",
    "GenerationConfig",
    "LlmConfig",
    "LoraConfig",
    "ModelConfig",
    "OptimConfig",
    "ProjectorConfig",
    "RunConfig",
    "TrainConfig",
    "VisionConfig",
]
