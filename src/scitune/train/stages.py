"""Stages: what each of align / finetune / full-finetune trains, and LoRA wrapping for the finetune stages."""

from __future__ import annotations

import logging

import torch

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
    """Apply LoRA if asked and not already applied, then freeze/unfreeze for ``stage``; returns counts per part.

    align: projector (+ MAGMA adapters). finetune: projector + LLM (with LoRA only the LoRA weights of the LLM)
    (+ MAGMA adapters). full-finetune: as finetune, plus the vision encoder. ``train_vision`` also unfreezes the
    encoder in align and finetune. Where the LLM is frozen (align, LoRA) the embedding rows of the tokens the
    processor added (``<im_start>``/``<im_end>``) still train, and nothing else of the embedding matrix moves.
    """
    if stage not in STAGE_TRAINS:
        raise ValueError(f"--train.stage must be one of {tuple(STAGE_TRAINS)}, got {stage!r}")
    if trains_llm(stage) and lora.r > 0 and not hasattr(model.llm, "peft_config"):
        apply_lora(model, lora)
    model.vision.requires_grad_(trains_vision(stage, train_vision))
    model.projector.requires_grad_(True)
    if not trains_llm(stage):
        model.llm.requires_grad_(False)
    elif hasattr(model.llm, "peft_config"):
        for name, p in model.llm.named_parameters():
            p.requires_grad_("lora_" in name)
    else:
        model.llm.requires_grad_(True)
    if model.adapters is not None:
        model.adapters.requires_grad_(True)
    train_added_rows(model)
    counts = model.parameter_counts()
    for part, c in counts.items():
        log.info("%-9s %14s params, %14s trainable", part, f"{c['total']:,}", f"{c['trainable']:,}")
    return counts


def train_added_rows(model: VisionLanguageModel) -> None:
    """Where the input embeddings are frozen, let the rows of tokens added past the base vocabulary other than the
    image token (``<im_start>``/``<im_end>``) train: the matrix becomes trainable and a gradient hook zeroes every
    other row, so AdamW (whose moments stay exactly zero there) leaves them bit-identical."""
    base = model.identity.get("llm", {}).get("base_vocab")
    emb = model.llm.get_input_embeddings()
    if base is None or emb.weight.requires_grad or emb.weight.shape[0] <= base + 1:
        return
    rows = [i for i in range(base, emb.weight.shape[0]) if i != model.image_token_id]
    if not rows:
        return
    keep = torch.zeros(emb.weight.shape[0], 1, dtype=emb.weight.dtype, device=emb.weight.device)
    keep[rows] = 1
    emb.weight.requires_grad_(True)
    if not getattr(emb.weight, "_scitune_row_hook", False):
        emb.weight.register_hook(lambda grad: grad * keep.to(grad.dtype))
        emb.weight._scitune_row_hook = True
