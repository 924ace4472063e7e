"""Export to / import from transformers' llava-hf folders: `LlavaForConditionalGeneration` for fixed-count models,
`LlavaNextForConditionalGeneration` for AnyRes ones (`scitune.interop.hf_llava_next`); `export_hf` picks the class."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from scitune.config.schema import DEFAULT_IMAGE_TOKEN
from scitune.loader import Loaded
from scitune.model.projector import LinearProjector, MlpProjector
from scitune.model.vlm import VisionLanguageModel
from scitune.processor import ImageTokenRule, Processor


def hf_select_strategy(select: str, has_cls: bool) -> str:
    """transformers' ``vision_feature_select_strategy`` for scitune's ``--model.vision.select``: ``default`` drops
    token 0 (the CLS token), ``full`` keeps every token (a tower without CLS, or ``cls_patch``)."""
    return "default" if select == "patch" and has_cls else "full"


def scitune_select(strategy: str, has_cls: bool) -> str:
    """scitune's ``select`` for transformers' ``vision_feature_select_strategy`` (inverse of `hf_select_strategy`)."""
    if strategy == "full":
        return "cls_patch" if has_cls else "patch"
    if not has_cls:
        raise ValueError("vision_feature_select_strategy 'default' drops a patch token of a tower without CLS")
    return "patch"


def check_exportable(model: VisionLanguageModel) -> None:
    """Raise ValueError when ``model`` has parts that a llava-hf model has no place for."""
    if model.adapters is not None:
        raise ValueError(
            "MAGMA adapters live inside the LM's blocks; LlavaForConditionalGeneration has no place for them, "
            "so this checkpoint cannot be exported (train without --model.adapter.name to export)"
        )
    if not isinstance(model.projector, (LinearProjector, MlpProjector)):
        raise ValueError(
            f"projector {type(model.projector).__name__} has no Llava equivalent; export supports linear and mlp2x-gelu"
        )
    if model.vision.select not in ("patch", "cls_patch") or model.vision.model.config.model_type not in (
        "clip_vision_model",
        "siglip_vision_model",
    ):
        raise ValueError("export needs a CLIP/SigLIP tower with --model.vision.select patch or cls_patch")


def _check_exportable(model: VisionLanguageModel) -> None:
    if model.anyres_grids:
        raise ValueError(
            "LlavaForConditionalGeneration does not cover AnyRes tiling (--model.vision.anyres): "
            "use to_hf_llava_next (export_hf picks it)"
        )
    check_exportable(model)


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
        vision_feature_select_strategy=hf_select_strategy(model.vision.select, model.vision.has_cls),
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


def projector_state(model: VisionLanguageModel) -> dict[str, torch.Tensor]:
    """The connector as transformers' ``multi_modal_projector`` weights (a linear one: identity ``linear_2``)."""
    p = model.projector
    if isinstance(p, LinearProjector):
        d = p.linear.out_features
        like = p.linear.weight
        return {
            "linear_1.weight": p.linear.weight,
            "linear_1.bias": p.linear.bias,
            "linear_2.weight": torch.eye(d, dtype=like.dtype, device=like.device),
            "linear_2.bias": torch.zeros(d, dtype=like.dtype, device=like.device),
        }
    return {k: v for k, v in p.state_dict().items() if k != "image_newline"}


def load_hf_weights(hf, model: VisionLanguageModel):
    """Copy ``model``'s weights (LoRA merged) into the llava-hf model ``hf``; returns it in eval mode."""
    llm = _merged_llm(model)
    hf.model.vision_tower.load_state_dict(model.vision.model.state_dict())
    hf.model.multi_modal_projector.load_state_dict(projector_state(model))
    hf.model.language_model.load_state_dict(llm.model.state_dict())
    hf.lm_head.load_state_dict(llm.lm_head.state_dict())
    return hf.to(next(llm.parameters()).dtype).eval()


def to_hf_llava(model: VisionLanguageModel):
    """Build a `LlavaForConditionalGeneration` with exactly ``model``'s weights (LoRA merged)."""
    from transformers import LlavaForConditionalGeneration

    return load_hf_weights(LlavaForConditionalGeneration(hf_llava_config(model)), model)


def hf_processor_args(model: VisionLanguageModel, processor: Processor) -> dict:
    """Keyword arguments shared by ``LlavaProcessor`` and ``LlavaNextProcessor`` (tokenizer, token rule, template)."""
    from scitune.interop.chat_template import jinja_chat_template

    if processor.rule.start_end:
        raise ValueError("llava-hf models have no <im_start>/<im_end> around image tokens: cannot export")
    return {
        "tokenizer": processor.tokenizer,
        "patch_size": int(model.vision.model.config.patch_size),
        "vision_feature_select_strategy": hf_select_strategy(model.vision.select, model.vision.has_cls),
        "chat_template": jinja_chat_template(processor),
        "image_token": processor.image_token,
        "num_additional_image_tokens": 1 if model.vision.has_cls else 0,
    }


def export_hf(
    model: VisionLanguageModel, processor: Processor, out: str | os.PathLike[str], overwrite: bool = False
) -> Path:
    """Write a llava-hf folder (model + processor with image token and chat template), atomically:
    `LlavaForConditionalGeneration` + ``LlavaProcessor``, or for an AnyRes model `LlavaNextForConditionalGeneration` +
    ``LlavaNextProcessor``. The processor's chat template renders what scitune renders (`jinja_chat_template`).

    A folder holding files scitune did not write is refused unless ``overwrite`` (`write_output_folder`).
    """
    from transformers import LlavaProcessor

    from scitune.outputs import write_output_folder

    if (processor.rule.grids, processor.rule.layout if processor.rule.grids else None) != (
        model.anyres_grids,
        model.anyres_layout,
    ):
        raise ValueError(
            f"the processor tiles with {processor.rule.grids} ({processor.rule.layout}) but the model with "
            f"{model.anyres_grids} ({model.anyres_layout}): a checkpoint put together from two others?"
        )
    if model.anyres_grids:
        from transformers import LlavaNextProcessor

        from scitune.interop.hf_llava_next import hf_next_image_processor, to_hf_llava_next

        hf = to_hf_llava_next(model)
        hf_processor = LlavaNextProcessor(
            image_processor=hf_next_image_processor(processor.base_image_processor, processor.rule),
            **hf_processor_args(model, processor),
        )
    else:
        hf = to_hf_llava(model)
        hf_processor = LlavaProcessor(image_processor=processor.image_processor, **hf_processor_args(model, processor))

    def writer(tmp: Path) -> None:
        hf.save_pretrained(tmp)
        hf_processor.save_pretrained(tmp)

    return write_output_folder(out, "hf-export", writer, overwrite)


def hf_parts(hf, cfg, template: str, proc, image_processor=None, rule: ImageTokenRule | None = None) -> tuple:
    """scitune's vision encoder, LLM, connector name, identity and processor from a loaded llava-hf model ``hf``
    (config ``cfg``, processor ``proc``); ``image_processor`` defaults to ``proc``'s and ``rule`` to a fixed count."""
    from transformers import AutoModelForCausalLM

    from scitune.model.vision import VisionEncoder

    if not isinstance(cfg.vision_feature_layer, int):
        raise ValueError("several vision_feature_layer values are not supported (scitune takes one)")
    act = cfg.projector_hidden_act
    if act not in ("gelu", "linear"):
        raise ValueError(f"projector activation {act!r} is not supported (gelu or linear)")
    vmt = cfg.vision_config.model_type
    has_cls = vmt == "clip_vision_model"
    select = scitune_select(cfg.vision_feature_select_strategy, has_cls)
    vision = VisionEncoder(hf.model.vision_tower, cfg.vision_feature_layer, select, has_cls=has_cls)
    llm = AutoModelForCausalLM.from_config(cfg.text_config)
    llm.model.load_state_dict(hf.model.language_model.state_dict())
    llm.lm_head.load_state_dict(hf.lm_head.state_dict())
    p = hf.model.multi_modal_projector
    linear = act == "linear" and torch.equal(p.linear_2.weight, torch.eye(p.linear_2.weight.shape[0]))
    identity = {
        "vision": {
            "name": {"clip_vision_model": "clip", "siglip_vision_model": "siglip"}.get(vmt, "auto"),
            "path": None,
            "feature_layer": cfg.vision_feature_layer,
            "select": select,
        },
        "llm": {"path": None, "dtype": "float32", "attn": None},
    }
    rule = rule or ImageTokenRule(vision.num_tokens, vision.image_size)
    image_processor = image_processor or proc.image_processor
    token = getattr(proc, "image_token", None) or DEFAULT_IMAGE_TOKEN
    processor = Processor(proc.tokenizer, image_processor, template, rule, token)
    return vision, llm, "linear" if linear else "mlp2x-gelu", identity, processor


def load_projector(model: VisionLanguageModel, hf) -> None:
    """Put a llava-hf ``multi_modal_projector``'s weights into ``model``'s connector."""
    p = hf.model.multi_modal_projector
    if isinstance(model.projector, LinearProjector):
        model.projector.linear.load_state_dict({"weight": p.linear_1.weight, "bias": p.linear_1.bias})
    else:
        model.projector.load_state_dict({**model.projector.state_dict(), **p.state_dict()})


def import_hf(folder: str | os.PathLike[str], template: str = "scitune") -> Loaded:
    """Read a llava-hf folder (``llava`` or ``llava_next``) into a model and processor that scitune can train and
    save."""
    from transformers import AutoConfig, AutoProcessor, LlavaForConditionalGeneration

    from scitune.model.builders import assemble

    cfg = AutoConfig.from_pretrained(folder)
    if cfg.model_type == "llava_next":
        from scitune.interop.hf_llava_next import import_hf_next

        return import_hf_next(folder, template)
    if cfg.model_type != "llava":
        raise ValueError(
            f"{folder}: model_type {cfg.model_type!r} is not 'llava' or 'llava_next'; only "
            "LlavaForConditionalGeneration and LlavaNextForConditionalGeneration folders can be imported"
        )
    hf = LlavaForConditionalGeneration.from_pretrained(folder)
    try:
        vision, llm, name, identity, processor = hf_parts(hf, cfg, template, AutoProcessor.from_pretrained(folder))
    except ValueError as e:
        raise ValueError(f"{folder}: {e}") from None
    model = assemble(vision, llm, name, identity, processor.image_token_id, len(processor.tokenizer))
    load_projector(model, hf)
    return Loaded(model.eval(), processor)
