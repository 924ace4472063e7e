"""Stages: what each of align / finetune / full-finetune trains, and LoRA wrapping for the finetune stages."""

from __future__ import annotations

import logging

from scitune.config.schema import LoraConfig
from scitune.model.vlm import VisionLanguageModel

log = logging.getLogger(__name__)

STAGE_TRAINS = {
    "align": ("projector",),
    "finetune": ("projector", "llm"),
    "full-finetune": ("vision", "projector", "llm"),
}
"""Parts each stage trains (MAGMA adapters, when present, train in every stage; --model.vision.trainable adds
the vision encoder to any stage)."""


def trains_vision(stage: str, vision_trainable: bool = False) -> bool:
    """Whether ``stage`` (with ``--model.vision.trainable``) changes the vision encoder's weights."""
    return vision_trainable or "vision" in STAGE_TRAINS[stage]


def trains_llm(stage: str) -> bool:
    """Whether ``stage`` changes the LLM's weights (fully or through LoRA)."""
    return "llm" in STAGE_TRAINS[stage]


def apply_lora(model: VisionLanguageModel, cfg: LoraConfig) -> None:
    """Wrap the LLM with peft LoRA adapters (finetune stage)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    if cfg.quantize != "none":  # QLoRA: cast norms to fp32, enable input grads for the 4-bit base
        from peft import prepare_model_for_kbit_training

        model.llm = prepare_model_for_kbit_training(model.llm)
    targets = cfg.target_modules if cfg.target_modules == "all-linear" else cfg.target_modules.split(",")
    peft_cfg = PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, task_type="CAUSAL_LM"
    )
    model.llm = get_peft_model(model.llm, peft_cfg)


def prepare_stage(
    model: VisionLanguageModel, stage: str, lora: LoraConfig, train_vision: bool = False
) -> dict[str, dict[str, int]]:
    """Apply LoRA if asked and not already applied, then freeze/unfreeze for ``stage``; returns counts."""
    if stage not in STAGE_TRAINS:
        raise ValueError(f"--train.stage must be one of {tuple(STAGE_TRAINS)}, got {stage!r}")
    if trains_llm(stage) and lora.r > 0 and not hasattr(model.llm, "peft_config"):
        apply_lora(model, lora)
    return model.set_trainable(stage, train_vision)
