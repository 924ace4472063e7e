"""Export to / import from transformers' `LlavaForConditionalGeneration` layout (llava-hf folders)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from scitune.config.schema import DEFAULT_IMAGE_TOKEN
from scitune.loader import Loaded
from scitune.model.projector import LinearProjector, MlpProjector
from scitune.model.vlm import VisionLanguageModel
from scitune.processor import ImageTokenRule, Processor

_SELECT_TO_HF = {"patch": "default", "cls_patch": "full"}


def _check_exportable(model: VisionLanguageModel) -> None:
    if model.anyres_grids:
        raise ValueError("export to HF Llava does not cover AnyRes tiling (--model.vision.anyres)")
    if model.adapters is not None:
        raise ValueError(
            "MAGMA adapters live inside the LM's blocks; LlavaForConditionalGeneration has no place for them, "
            "so this checkpoint cannot be exported (train without --model.adapter.name to export)"
        )
    if not isinstance(model.projector, (LinearProjector, MlpProjector)):
        raise ValueError(
            f"projector {type(model.projector).__name__} has no Llava equivalent; export supports linear and mlp2x-gelu"
        )
    if model.vision.select not in _SELECT_TO_HF or model.vision.model.config.model_type not in (
        "clip_vision_model",
        "siglip_vision_model",
    ):
        raise ValueError("export needs a CLIP/SigLIP tower with --model.vision.select patch or cls_patch")


def hf_llava_config(model: VisionLanguageModel):
    """A `LlavaConfig` describing ``model``; a linear connector becomes linear_1 + identity act + identity linear_2."""
    from transformers import LlavaConfig

    _check_exportable(model)
    linear = isinstance(model.projector, LinearProjector)
    cfg = LlavaConfig(
        vision_config=model.vision.model.config.to_dict(),
        text_config=_unwrap(model.llm).config.to_dict(),
        projector_hidden_act="linear" if linear else "gelu",
        vision_feature_layer=model.vision.feature_layer,
        vision_feature_select_strategy=_SELECT_TO_HF[model.vision.select],
        multimodal_projector_bias=True,
        image_seq_length=model.num_image_tokens,
    )
    cfg.image_token_id = model.image_token_id
    cfg.image_token_index = model.image_token_id
    return cfg


def _unwrap(llm):
    return llm.get_base_model() if hasattr(llm, "peft_config") else llm


def _merged_llm(model: VisionLanguageModel):
    if hasattr(model.llm, "peft_config"):
        import copy

        return copy.deepcopy(model.llm).merge_and_unload()
    return model.llm


def to_hf_llava(model: VisionLanguageModel):
    """Build a `LlavaForConditionalGeneration` with exactly ``model``'s weights (LoRA merged)."""
    from transformers import LlavaForConditionalGeneration

    hf = LlavaForConditionalGeneration(hf_llava_config(model))
    llm = _merged_llm(model)
    hf.model.vision_tower.load_state_dict(model.vision.model.state_dict())
    if isinstance(model.projector, LinearProjector):
        d = model.projector.linear.out_features
        proj = {
            "linear_1.weight": model.projector.linear.weight,
            "linear_1.bias": model.projector.linear.bias,
            "linear_2.weight": torch.eye(d),
            "linear_2.bias": torch.zeros(d),
        }
        hf.model.multi_modal_projector.load_state_dict(proj)
    else:
        hf.model.multi_modal_projector.load_state_dict(model.projector.state_dict())
    hf.model.language_model.load_state_dict(llm.model.state_dict())
    hf.lm_head.load_state_dict(llm.lm_head.state_dict())
    return hf.to(next(llm.parameters()).dtype).eval()


def jinja_chat_template(processor: Processor) -> str | None:
    """A Jinja chat template for the llava-hf processor that renders prompts exactly as scitune's template does."""
    from scitune.data.templates import SeparatorTemplate

    t = processor.template
    if not isinstance(t, SeparatorTemplate) or processor.template_name == "plain":
        return getattr(processor.tokenizer, "chat_template", None)
    end = processor.tokenizer.eos_token if t.assistant_end == "<eos>" else t.assistant_end
    esc = {
        k: v.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
        for k, v in {
            "system": t.system,
            "ssep": t.system_sep,
            "up": t.user_prefix,
            "us": t.user_suffix,
            "ap": t.assistant_prefix,
            "end": end,
        }.items()
    }
    content = (
        "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}" + processor.image_token + "{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
        "{% endif %}"
    )
    return (
        "{% set ns = namespace(system='" + esc["system"] + "') %}"
        "{% for m in messages %}{% if m['role'] == 'system' %}{% set ns.system = m['content'] %}{% endif %}{% endfor %}"
        "{{ ns.system }}{{ '" + esc["ssep"] + "' }}"
        "{% for m in messages %}{% if m['role'] == 'user' %}{{ '"
        + esc["up"]
        + "' }}"
        + content
        + "{{ '"
        + esc["us"]
        + "' }}{% elif m['role'] == 'assistant' %}{{ '"
        + esc["ap"]
        + "' }}"
        + content
        + "{{ '"
        + esc["end"]
        + "' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '"
        + esc["ap"]
        + "' }}{% endif %}"
    )


def export_hf(
    model: VisionLanguageModel, processor: Processor, out: str | os.PathLike[str], overwrite: bool = False
) -> Path:
    """Write a llava-hf folder (model + processor with image token and chat template), atomically.

    A folder holding files scitune did not write is refused unless ``overwrite`` (`write_output_folder`).
    """
    from transformers import LlavaProcessor

    from scitune.outputs import write_output_folder

    if processor.rule.start_end:
        raise ValueError("LlavaForConditionalGeneration has no <im_start>/<im_end> around image tokens: cannot export")
    hf = to_hf_llava(model)
    cfg = model.vision.model.config
    hf_processor = LlavaProcessor(
        image_processor=processor.image_processor,
        tokenizer=processor.tokenizer,
        patch_size=int(cfg.patch_size),
        vision_feature_select_strategy=_SELECT_TO_HF[model.vision.select],
        chat_template=jinja_chat_template(processor),
        image_token=processor.image_token,
        num_additional_image_tokens=1 if model.vision.has_cls else 0,
    )

    def writer(tmp: Path) -> None:
        hf.save_pretrained(tmp)
        hf_processor.save_pretrained(tmp)

    return write_output_folder(out, "hf-export", writer, overwrite)


def import_hf(folder: str | os.PathLike[str], template: str = "scitune") -> Loaded:
    """Read a llava-hf folder into a model and processor that scitune can train and save."""
    from transformers import AutoModelForCausalLM, AutoProcessor, LlavaConfig, LlavaForConditionalGeneration

    from scitune.model.vision import VisionEncoder

    cfg = LlavaConfig.from_pretrained(folder)
    if cfg.model_type != "llava":
        raise ValueError(
            f"{folder}: model_type {cfg.model_type!r} is not 'llava'; only LlavaForConditionalGeneration "
            "folders can be imported"
        )
    if not isinstance(cfg.vision_feature_layer, int):
        raise ValueError(f"{folder}: several vision_feature_layer values are not supported (scitune takes one)")
    act = cfg.projector_hidden_act
    if act not in ("gelu", "linear"):
        raise ValueError(f"{folder}: projector activation {act!r} is not supported (gelu or linear)")
    hf = LlavaForConditionalGeneration.from_pretrained(folder)
    proc = AutoProcessor.from_pretrained(folder)
    select = {"default": "patch", "full": "cls_patch"}[cfg.vision_feature_select_strategy]
    vmt = cfg.vision_config.model_type
    vision = VisionEncoder(hf.model.vision_tower, cfg.vision_feature_layer, select, has_cls=vmt == "clip_vision_model")
    llm = AutoModelForCausalLM.from_config(cfg.text_config)
    llm.model.load_state_dict(hf.model.language_model.state_dict())
    llm.lm_head.load_state_dict(hf.lm_head.state_dict())
    p = hf.model.multi_modal_projector
    linear = act == "linear" and torch.equal(p.linear_2.weight, torch.eye(p.linear_2.weight.shape[0]))
    name = "linear" if linear else "mlp2x-gelu"
    from scitune.model.builders import assemble

    identity = {
        "vision": {
            "name": {"clip_vision_model": "clip", "siglip_vision_model": "siglip"}.get(vmt, "auto"),
            "path": None,
            "feature_layer": cfg.vision_feature_layer,
            "select": select,
        },
        "llm": {"path": None, "dtype": "float32", "attn": None},
    }
    rule = ImageTokenRule(vision.num_tokens, vision.image_size)
    processor = Processor(
        proc.tokenizer, proc.image_processor, template, rule, getattr(proc, "image_token", None) or DEFAULT_IMAGE_TOKEN
    )
    model = assemble(vision, llm, name, identity, processor.image_token_id, len(processor.tokenizer))
    if linear:
        model.projector.linear.load_state_dict({"weight": p.linear_1.weight, "bias": p.linear_1.bias})
    else:
        model.projector.load_state_dict(p.state_dict())
    return Loaded(model.eval(), processor)
