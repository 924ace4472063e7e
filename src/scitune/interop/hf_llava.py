"""Export to / import from transformers' llava-hf folders: `LlavaForConditionalGeneration` for fixed-count models,
`LlavaNextForConditionalGeneration` for AnyRes ones (`scitune.interop.hf_llava_next`); `export_hf` picks the class."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from scitune.config.schema import DEFAULT_IMAGE_TOKEN
from scitune.interop import connector
from scitune.interop.hf_files import (
    llava_hf_state_dict,
    save_weights,
    write_config,
    write_generation_config,
    write_processor_files,
)
from scitune.interop.model_card import model_card
from scitune.interop.vllm_compat import vllm_llava_problems
from scitune.io import read_json, write_json, write_text
from scitune.loader import Loaded
from scitune.model.projector import LinearProjector, MlpProjector
from scitune.model.vlm import VisionLanguageModel
from scitune.processor import ImageTokenRule, Processor

log = logging.getLogger(__name__)

EXPORT_FILE = "scitune_export.json"
"""What scitune records in an export: its chat template, image token, connector form and the model's identity (read
back by `import_hf`; HF loaders ignore it)."""


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


def text_config(model: VisionLanguageModel) -> dict[str, Any]:
    """The LLM's config as a dict, with its class in ``architectures`` (vLLM and AutoModel pick the LM class by it)."""
    llm = _unwrap(model.llm)
    return {**llm.config.to_dict(), "architectures": [type(llm).__name__]}


def hf_llava_config(model: VisionLanguageModel):
    """A `LlavaConfig` describing ``model``; the connector's activation is its export form's
    (`scitune.interop.connector`: a linear connector as the exact ReLU MLP where the LM is wide enough)."""
    from transformers import LlavaConfig

    _check_exportable(model)
    return with_image_token(LlavaConfig(**llava_config_args(model)), model)


def llava_config_args(model: VisionLanguageModel) -> dict[str, Any]:
    """The arguments `LlavaConfig` and `LlavaNextConfig` share: the towers, the connector, the image features."""
    text = text_config(model)
    return {
        "vision_config": model.vision.model.config.to_dict(),
        "text_config": text,
        "projector_hidden_act": connector.ACTIVATION[connector.connector_form(model.projector)],
        "vision_feature_layer": model.vision.feature_layer,
        "vision_feature_select_strategy": hf_select_strategy(model.vision.select, model.vision.has_cls),
        "multimodal_projector_bias": True,
        "image_seq_length": model.num_image_tokens,
        "tie_word_embeddings": bool(text.get("tie_word_embeddings", False)),
    }


def with_image_token(cfg: Any, model: VisionLanguageModel) -> Any:
    """``cfg`` with the image token under both names (``image_token_id`` in 5.x, ``image_token_index`` in 4.x)."""
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
    """The connector as transformers' ``multi_modal_projector`` weights, in its export form."""
    return connector.projector_state(model.projector, connector.connector_form(model.projector))


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
    model: VisionLanguageModel,
    processor: Processor,
    out: str | os.PathLike[str],
    overwrite: bool = False,
    checkpoint: str | os.PathLike[str] | None = None,
) -> Path:
    """Write a llava-hf folder that transformers 4.45+ and 5.x load alike, atomically: `LlavaForConditionalGeneration`
    + ``LlavaProcessor``, or for an AnyRes model `LlavaNextForConditionalGeneration` + ``LlavaNextProcessor``.

    The weights use the hub's llava-hf key layout, the tokenizer, image processor and chat template go into every file
    either line reads (`scitune.interop.hf_files`); the chat template renders what scitune renders
    (`jinja_chat_template`), ``generation_config.json`` stops where scitune stops, a linear connector is written in the
    exact ReLU form vLLM loads where the LM is wide enough (`scitune.interop.connector`), ``scitune_export.json``
    records the template and ``README.md`` is the model card (training data and scores from ``checkpoint``, the
    scitune checkpoint folder the model came from, when given).

    A folder holding files scitune did not write is refused unless ``overwrite`` (`write_output_folder`).
    """
    from scitune.outputs import write_output_folder

    if (processor.rule.grids, processor.rule.layout if processor.rule.grids else None) != (
        model.anyres_grids,
        model.anyres_layout,
    ):
        raise ValueError(
            f"the processor tiles with {processor.rule.grids} ({processor.rule.layout}) but the model with "
            f"{model.anyres_grids} ({model.anyres_layout}): a checkpoint put together from two others?"
        )
    hf_config, hf_processor = _hf_config_and_processor(model, processor)
    form = connector.connector_form(model.projector)
    if form == connector.IDENTITY:
        d_in, d_out = model.projector.linear.in_features, model.projector.linear.out_features
        log.warning(
            "the linear connector maps %d vision features into an LM of width %d (< 2 x %d): it is exported with "
            "the 'linear' activation, which transformers loads but vLLM does not (vLLM's LLaVA projector has no "
            "identity activation, and the exact ReLU form needs an LM twice as wide as the vision features)",
            *(d_in, d_out, d_in),
        )
    llm = _merged_llm(model)
    dtype = next(llm.parameters()).dtype
    state = llava_hf_state_dict(
        model, llm, connector.projector_state(model.projector, form), image_newline=bool(model.anyres_grids)
    )
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    record = export_record(model, processor, form, type(hf_config).__name__, checkpoint)
    hf_config.architectures = [record["model_class"]]  # transformers' pipelines and vLLM pick the class by it

    def writer(tmp: Path) -> None:
        write_config(hf_config, tmp, str(dtype).removeprefix("torch."))
        save_weights(state, tmp)
        write_processor_files(hf_processor, tmp)
        generation = write_generation_config(processor, tmp)
        write_json(tmp / EXPORT_FILE, record)
        card = model_card(
            model, processor, record["model_class"], form, generation, vllm_llava_problems(tmp), checkpoint
        )
        write_text(tmp / "README.md", card)

    return write_output_folder(out, "hf-export", writer, overwrite)


def _hf_config_and_processor(model: VisionLanguageModel, processor: Processor) -> tuple[Any, Any]:
    """The llava-hf config and processor of ``model``: Llava, or LlavaNext for an AnyRes model."""
    from transformers import LlavaNextProcessor, LlavaProcessor

    if model.anyres_grids:
        from scitune.interop.hf_llava_next import hf_llava_next_config, hf_next_image_processor

        image_processor = hf_next_image_processor(processor.base_image_processor, processor.rule)
        return hf_llava_next_config(model), LlavaNextProcessor(
            image_processor=image_processor, **hf_processor_args(model, processor)
        )
    image_processor = processor.image_processor
    if processor.image_aspect == "pad":  # LLaVA-1.5's expand2square: HF's LlavaImageProcessor with do_pad
        from scitune.interop.hf_llava_next import hf_pad_image_processor

        image_processor = hf_pad_image_processor(processor.base_image_processor)
    return hf_llava_config(model), LlavaProcessor(
        image_processor=image_processor, **hf_processor_args(model, processor)
    )


def export_record(
    model: VisionLanguageModel, processor: Processor, form: str, config_class: str, checkpoint: Any = None
) -> dict[str, Any]:
    """The content of `EXPORT_FILE`."""
    from scitune import __version__

    return {
        "format": 1,
        "scitune_version": __version__,
        "model_class": config_class.replace("Config", "ForConditionalGeneration"),
        "template": processor.template_name,
        "image_token": processor.image_token,
        "connector": {"name": model.identity.get("projector", {}).get("name"), "form": form},
        "identity": model.identity,
        "source": str(checkpoint) if checkpoint is not None else None,
    }


def resolve_template(folder: str | os.PathLike[str], template: str | None, proc: Any) -> str:
    """The chat template of an imported llava-hf folder: ``template`` when given (a registered one), else the one a
    scitune export records (`EXPORT_FILE`), else the registered template whose rendering the folder's chat template
    reproduces (`infer_template`); raises ValueError naming the known templates otherwise."""
    from scitune.data.templates import CHAT_TEMPLATES
    from scitune.interop.chat_template import infer_template

    known = CHAT_TEMPLATES.names()
    recorded = None
    if (Path(folder) / EXPORT_FILE).is_file():
        recorded = read_json(Path(folder) / EXPORT_FILE).get("template")
    if template is not None:
        if template not in known:
            raise ValueError(f"unknown chat template {template!r}; known: {', '.join(known)} (scitune ls templates)")
        if recorded and recorded != template:
            log.warning("%s was exported with the chat template %r; using %r as asked", folder, recorded, template)
        return template
    if recorded:
        if recorded not in known:
            raise ValueError(
                f"records the chat template {recorded!r}, which this scitune does not know: pass --template"
            )
        return recorded
    jinja = getattr(proc, "chat_template", None) or getattr(proc.tokenizer, "chat_template", None)
    name = infer_template(jinja, proc.tokenizer, getattr(proc, "image_token", None) or DEFAULT_IMAGE_TOKEN)
    if name is None:
        raise ValueError(
            "its chat template renders as none of scitune's; pass --template (one of: " + ", ".join(known) + ")"
        )
    log.info("%s: chat template %r (its Jinja template renders as scitune's)", folder, name)
    return name


def hf_parts(hf, cfg, template: str, proc, image_processor=None, rule: ImageTokenRule | None = None) -> tuple:
    """scitune's vision encoder, LLM, connector name, identity and processor from a loaded llava-hf model ``hf``
    (config ``cfg``, processor ``proc``); ``image_processor`` defaults to ``proc``'s and ``rule`` to a fixed count."""
    from transformers import AutoModelForCausalLM

    from scitune.model.vision import VisionEncoder

    if not isinstance(cfg.vision_feature_layer, int):
        raise ValueError("several vision_feature_layer values are not supported (scitune takes one)")
    act = cfg.projector_hidden_act
    linear = connector.linear_from_state(hf.model.multi_modal_projector.state_dict(), act) is not None
    if not linear and act != "gelu":
        raise ValueError(
            f"projector activation {act!r}: not a scitune connector (a gelu MLP, or a linear map in the 'linear' or "
            "the exact ReLU form)"
        )
    vmt = cfg.vision_config.model_type
    has_cls = vmt == "clip_vision_model"
    select = scitune_select(cfg.vision_feature_select_strategy, has_cls)
    vision = VisionEncoder(hf.model.vision_tower, cfg.vision_feature_layer, select, has_cls=has_cls)
    llm = AutoModelForCausalLM.from_config(cfg.text_config)
    llm.model.load_state_dict(hf.model.language_model.state_dict())
    llm.lm_head.load_state_dict(hf.lm_head.state_dict())
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
    """Put a llava-hf ``multi_modal_projector``'s weights into ``model``'s connector (a linear map back from its
    export form, exactly)."""
    p = hf.model.multi_modal_projector
    if isinstance(model.projector, LinearProjector):
        w, b = connector.linear_from_state(p.state_dict(), hf.config.projector_hidden_act)
        model.projector.linear.load_state_dict({"weight": w, "bias": b})
    else:
        model.projector.load_state_dict({**model.projector.state_dict(), **p.state_dict()})


def import_hf(folder: str | os.PathLike[str], template: str | None = None) -> Loaded:
    """Read a llava-hf folder (``llava`` or ``llava_next``) into a model and processor that scitune can train and
    save; ``template`` as `resolve_template` says (a scitune export's own, by default)."""
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
    proc = AutoProcessor.from_pretrained(folder)
    try:
        vision, llm, name, identity, processor = hf_parts(hf, cfg, resolve_template(folder, template, proc), proc)
    except ValueError as e:
        raise ValueError(f"{folder}: {e}") from None
    model = assemble(vision, llm, name, identity, processor.image_token_id, len(processor.tokenizer))
    load_projector(model, hf)
    return Loaded(model.eval(), processor)
