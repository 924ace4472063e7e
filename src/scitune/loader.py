"""The one loader: ``load(source) -> (model, processor)`` for a scitune checkpoint, a llava-hf folder, an original
LLaVA-layout folder or a run config / preset; ``build(config)`` makes a new model with its processor, and
``tiny_vlm`` the tiny random one that tests and docs use."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import torch

from scitune.config.schema import ModelConfig
from scitune.io import DataError
from scitune.model.anyres import parse_grids
from scitune.model.vision import VisionEncoder
from scitune.model.vlm import VisionLanguageModel
from scitune.processor import ImageTokenRule, Processor


class Loaded(NamedTuple):
    """A model and the processor that makes its inputs."""

    model: VisionLanguageModel
    processor: Processor


def _rule(vision: VisionEncoder, projector_tokens: int, anyres: Sequence[str], start_end: bool) -> ImageTokenRule:
    return ImageTokenRule(projector_tokens or vision.num_tokens, vision.image_size, parse_grids(anyres), start_end)


def build(cfg: ModelConfig, template: str = "scitune", quantize: str = "none") -> Loaded:
    """A new model and its processor from a `ModelConfig`: weights through ``from_pretrained`` (hub id or folder).

    With ``cfg.init_from`` set, both are loaded from that scitune checkpoint instead (``template`` applies).
    """
    from transformers import AutoTokenizer

    from scitune.model.builders import _abs_if_local, assemble, vision_identity
    from scitune.model.llm import DTYPES, load_llm
    from scitune.model.vision import load_vision_encoder

    if cfg.init_from:  # the checkpoint's model and processor; the config decides start/end tokens and image aspect
        model, processor = load(cfg.init_from, template=template)
        if processor.rule.start_end != cfg.use_im_start_end:
            processor = processor.replace(rule=replace(processor.rule, start_end=cfg.use_im_start_end))
        if processor.image_aspect != cfg.vision.image_aspect:
            processor = processor.replace(image_aspect=cfg.vision.image_aspect)
        return Loaded(model, processor)
    vision, image_processor = load_vision_encoder(
        cfg.vision.name,
        cfg.vision.path,
        cfg.vision.feature_layer,
        cfg.vision.select,
        DTYPES[cfg.llm.dtype],
        random_init=cfg.vision.random_init,
    )
    tokenizer = AutoTokenizer.from_pretrained(cfg.llm.tokenizer or cfg.llm.path)
    rule = _rule(vision, cfg.projector.num_tokens, cfg.vision.anyres, cfg.use_im_start_end)
    processor = Processor(tokenizer, image_processor, template, rule, cfg.image_token, cfg.vision.image_aspect)
    llm = load_llm(cfg.llm.path, cfg.llm.dtype, cfg.llm.attn_implementation, quantize)
    identity = {
        "vision": vision_identity(cfg.vision),
        "llm": {"path": _abs_if_local(cfg.llm.path), "dtype": cfg.llm.dtype, "attn": cfg.llm.attn_implementation},
    }
    model = assemble(
        vision,
        llm,
        cfg.projector.name,
        identity,
        processor.image_token_id,
        len(processor.tokenizer),
        cfg.projector.num_tokens,
        cfg.adapter.name,
        cfg.adapter.downsample_factor,
        cfg.vision.anyres,
    )
    return Loaded(model, processor)


def load_checkpoint(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    dtype: str | None = None,
    trainable_lora: bool = False,
    verify: str = "quick",
    template: str | None = None,
) -> Loaded:
    """A scitune checkpoint's model and processor (`scitune.model.checkpoint.load_model` for the options)."""
    from scitune.model.checkpoint import load_model, read_meta, verify_checkpoint

    p = Path(path)
    verify_checkpoint(p, verify)
    meta = read_meta(p)
    if meta.get("llm", {}).get("saved") == "lora":
        from scitune.extras import require

        require(f"{p} (LoRA adapters)", "peft")
    legacy = None
    if not (p / "processor.json").is_file():  # written before processors were saved: rebuild it from scitune.json
        v = meta.get("vision", {})
        grids = parse_grids(v.get("anyres", []))  # such AnyRes checkpoints predate the llava-next layout: tiles
        legacy = ImageTokenRule(int(meta["num_image_tokens"]), 0, grids, layout=v.get("anyres_layout", "tiles"))
    processor = Processor.from_pretrained(p, meta.get("template", "scitune"), legacy)
    model = load_model(p, len(processor.tokenizer), device, dtype, trainable_lora, verify="sizes")
    if legacy is not None and legacy.grids:  # the tile size is the encoder's
        processor = processor.replace(rule=replace(legacy, tile_size=model.vision.image_size))
    if template:
        processor = with_template(processor, template)
    if processor.rule.grids and processor.rule.layout != model.anyres_layout:
        raise DataError(
            f"{p}: the processor's AnyRes layout {processor.rule.layout!r} differs from the model's "
            f"{model.anyres_layout!r} (processor.json and scitune.json disagree)"
        )
    if processor.image_token_id != model.image_token_id:
        raise DataError(
            f"{p}: the processor's image token id {processor.image_token_id} differs from the model's "
            f"{model.image_token_id} (a checkpoint put together from two others?)"
        )
    return Loaded(model, processor)


def load_processor(source: str | os.PathLike[str], template: str | None = None) -> Processor:
    """Only the processor of ``source`` (a checkpoint's is read from its files, no weights loaded)."""
    p = Path(source)
    if source_kind(p) == "checkpoint" and (p / "processor.json").is_file():
        from scitune.model.checkpoint import verify_checkpoint

        verify_checkpoint(p, "quick")
        processor = Processor.from_pretrained(p)
        return with_template(processor, template) if template else processor
    return load(source, template=template).processor


def save_files(
    model: VisionLanguageModel,
    processor: Processor,
    out: Path,
    llm_changed: bool,
    vision_changed: bool,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Write a checkpoint's files (the model's and the processor's) into the empty folder ``out``."""
    from scitune.model.checkpoint import save_model_files

    meta = save_model_files(model, out, llm_changed, vision_changed, state_dict)
    processor.save_pretrained(out)
    if (out / "vision").is_dir():  # a saved encoder folder loads on its own with from_pretrained: give it its processor
        processor.base_image_processor.save_pretrained(out / "vision")
    return meta


def save_checkpoint(
    model: VisionLanguageModel,
    processor: Processor,
    path: str | os.PathLike[str],
    llm_changed: bool = True,
    vision_changed: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write a complete, verified checkpoint folder (`scitune.model.checkpoint.write_checkpoint`)."""
    from scitune.model.checkpoint import write_checkpoint

    return write_checkpoint(
        path, lambda d: save_files(model, processor, d, llm_changed, vision_changed), overwrite=overwrite
    )


def with_template(processor: Processor, template: str) -> Processor:
    """The same processor with another chat template."""
    if template == processor.template_name:
        return processor
    return processor.replace(template=template)


def source_kind(source: str | os.PathLike[str]) -> str:
    """What ``source`` is: ``checkpoint`` (scitune), ``llava-hf``, ``llava-original`` or ``config``."""
    p = Path(source)
    if p.is_dir():
        if (p / "scitune.json").is_file():
            return "checkpoint"
        cfg_file = p / "config.json"
        if cfg_file.is_file():
            cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
            if "mm_vision_tower" in cfg:  # LLaVA-v0 configs say model_type "llava" too
                return "llava-original"
            if cfg.get("model_type") in ("llava", "llava_next"):
                return "llava-hf"
        raise DataError(
            f"{p}: not a scitune checkpoint (no scitune.json), a llava-hf folder or an original LLaVA folder"
        )
    from scitune.config.io import PRESETS

    if p.is_file() and p.suffix in (".yaml", ".yml", ".json") or str(source) in PRESETS.names():
        return "config"
    if not p.exists():
        raise DataError(f"{p}: checkpoint folder not found")
    raise DataError(f"{p}: not a checkpoint folder or a run config")


def load(
    source: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    dtype: str | None = None,
    trainable_lora: bool = False,
    verify: str = "quick",
    template: str | None = None,
) -> Loaded:
    """Load a model and its processor from whatever ``source`` is (see `source_kind`).

    Args:
        source: a scitune checkpoint folder, a llava-hf folder (``LlavaForConditionalGeneration`` /
            ``LlavaNextForConditionalGeneration``), an original LLaVA-layout folder, or a run config (preset name or
            YAML file) whose model section is built.
        device: where to put the model.
        dtype: override the LLM's dtype.
        trainable_lora: LoRA adapters of a checkpoint load trainable (to continue training).
        verify: how much of a checkpoint to check first (`scitune.model.checkpoint.verify_checkpoint`).
        template: use this chat template instead of the recorded one.
    """
    kind = source_kind(source)
    if kind == "checkpoint":
        return load_checkpoint(source, device, dtype, trainable_lora, verify, template)
    if kind == "llava-hf":
        from scitune.interop.hf_llava import import_hf

        loaded = import_hf(source, template or "vicuna-v1")
    elif kind == "llava-original":
        from scitune.interop.llava_original import import_llava_original

        loaded = import_llava_original(source, template)
    else:
        from scitune.config.io import load_run_config

        cfg = load_run_config(str(source))
        loaded = build(cfg.model, template or cfg.data.template)
    return Loaded(loaded.model.to(device).eval(), loaded.processor)


def tiny_vlm(
    seed: int = 0,
    projector: str = "mlp2x-gelu",
    template: str = "scitune",
    select: str = "patch",
    adapter: str | None = None,
    projector_tokens: int = 0,
    anyres: Sequence[str] = (),
    start_end: bool = False,
) -> Loaded:
    """A tiny random VLM and its processor, on CPU in fp32 (CLIP 32px/patch 8 -> 16 image tokens, LLaMA hidden 32).

    ``anyres`` grids (e.g. ``["1x1", "2x2"]``) turn on AnyRes tiling with 32px tiles; ``start_end`` puts
    ``<im_start>``/``<im_end>`` around each image's tokens.
    """
    from scitune.model.builders import assemble, tiny_llm, tiny_tokenizer, tiny_vision

    tok = tiny_tokenizer()
    vision_model, image_processor = tiny_vision(seed)
    llm = tiny_llm(len(tok), seed, bos=tok.bos_token_id, eos=tok.eos_token_id)
    vision = VisionEncoder(vision_model, -2, select, has_cls=True)
    processor = Processor(tok, image_processor, template, _rule(vision, projector_tokens, anyres, start_end))
    identity: dict[str, Any] = {
        "vision": {"name": "clip", "path": None, "feature_layer": -2, "select": select},
        "llm": {"path": None, "dtype": "float32", "attn": None},
    }
    torch.manual_seed(seed + 1)
    model = assemble(
        vision,
        llm,
        projector,
        identity,
        processor.image_token_id,
        len(processor.tokenizer),
        projector_tokens,
        adapter,
        anyres=anyres,
    )
    return Loaded(model, processor)


__all__ = ["Loaded", "build", "load", "load_checkpoint", "save_checkpoint", "save_files", "tiny_vlm", "with_template"]
