"""Conversion between `VisionLanguageModel` and transformers' `LlavaForConditionalGeneration`."""

from __future__ import annotations

from scitune.model.projector import MlpProjector
from scitune.model.vlm import VisionLanguageModel


def hf_llava_config(model: VisionLanguageModel):
    """A `LlavaConfig` describing ``model`` (mlp2x-gelu projector, CLIP-like tower)."""
    from transformers import LlavaConfig

    if not isinstance(model.projector, MlpProjector):
        raise ValueError("transformers' Llava layout needs the mlp2x-gelu projector")
    strategy = "default" if model.vision.select == "patch" else "full"
    cfg = LlavaConfig(
        vision_config=model.vision.model.config.to_dict(),
        text_config=model.llm.config.to_dict(),
        projector_hidden_act="gelu",
        vision_feature_layer=model.vision.feature_layer,
        vision_feature_select_strategy=strategy,
        multimodal_projector_bias=True,
        image_seq_length=model.num_image_tokens,
    )
    cfg.image_token_id = model.image_token_id
    cfg.image_token_index = model.image_token_id
    return cfg


def to_hf_llava(model: VisionLanguageModel):
    """Build a `LlavaForConditionalGeneration` with exactly ``model``'s weights."""
    from transformers import LlavaForConditionalGeneration

    hf = LlavaForConditionalGeneration(hf_llava_config(model))
    hf.model.vision_tower.load_state_dict(model.vision.model.state_dict())
    hf.model.multi_modal_projector.load_state_dict(model.projector.state_dict())
    hf.model.language_model.load_state_dict(model.llm.model.state_dict())
    hf.lm_head.load_state_dict(model.llm.lm_head.state_dict())
    return hf.to(next(model.llm.parameters()).dtype).eval()
