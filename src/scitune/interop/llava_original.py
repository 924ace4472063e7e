"""Import checkpoints in the original LLaVA layout (LLaVA-v0/v1/1.5 and forks such as SciTune's):
``LlavaLlamaForCausalLM`` weights with ``model.mm_projector.*`` beside the LLaMA ones, and a config carrying
``mm_vision_tower``, ``mm_hidden_size``, ``mm_projector_type``, ``mm_use_im_start_end`` and ``mm_vision_select_layer``.

That is how the SciTune and LLaVA weights are released. Weights are read from safetensors, or from ``.bin`` files
only through ``torch.load(weights_only=True)`` (never a pickle that can run code).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from scitune.config.schema import DEFAULT_IMAGE_TOKEN
from scitune.io import DataError
from scitune.loader import Loaded
from scitune.processor import ImageTokenRule, Processor

PATCH_TOKEN = "<im_patch>"
"""LLaVA-v0's image patch token (its ``mm_use_im_patch_token``); v1.5 marks images with an id outside the vocabulary,
so scitune uses its own ``<image>`` token for those."""
_PROJECTOR_PREFIXES = ("model.mm_projector.", "mm_projector.")
_SKIPPED_PREFIXES = ("model.vision_tower.", "vision_tower.")


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's weight files (safetensors preferred; ``.bin`` through ``weights_only``)."""
    from safetensors.torch import load_file

    st = sorted(folder.glob("*.safetensors"))
    bins = sorted(p for p in folder.glob("*.bin") if p.name != "training_args.bin")
    if not st and not bins:
        raise DataError(f"{folder}: no weight files (*.safetensors or pytorch_model*.bin)")
    sd: dict[str, torch.Tensor] = {}
    for p in st:
        sd.update(load_file(str(p)))
    if not st:
        for p in bins:
            try:
                sd.update(torch.load(p, map_location="cpu", weights_only=True))
            except Exception as e:  # an unsafe pickle, or a damaged file
                raise DataError(f"{p}: cannot read it as plain tensors (weights_only): {e}") from None
    return sd


def _projector(cfg: dict[str, Any], sd: dict[str, torch.Tensor]) -> tuple[str, dict[str, torch.Tensor]]:
    """The scitune projector name and its state dict from LLaVA's ``mm_projector`` tensors."""
    proj = {k.split("mm_projector.", 1)[1]: v for k, v in sd.items() if k.startswith(_PROJECTOR_PREFIXES)}
    kind = cfg.get("mm_projector_type", "linear")
    if kind == "linear" and set(proj) == {"weight", "bias"}:
        return "linear", {"linear.weight": proj["weight"], "linear.bias": proj["bias"]}
    if kind == "mlp2x_gelu" and {"0.weight", "0.bias", "2.weight", "2.bias"} <= set(proj):
        names = {"0": "linear_1", "2": "linear_2"}
        return "mlp2x-gelu", {f"{names[k.split('.')[0]]}.{k.split('.')[1]}": v for k, v in proj.items()}
    raise DataError(f"mm_projector_type {kind!r} with tensors {sorted(proj)} is not supported (linear, mlp2x_gelu)")


def import_llava_original(
    folder: str | os.PathLike[str], template: str | None = None, vision_tower: str | None = None
) -> Loaded:
    """Read an original-LLaVA-layout folder into a model and processor that scitune can run, train and save.

    Args:
        folder: the checkpoint folder (config.json, tokenizer files, weights).
        template: chat template; default ``llava-v0`` for v0-style checkpoints (with ``<im_patch>``), else
            ``vicuna-v1``.
        vision_tower: a local folder (or hub id) of the CLIP tower, instead of the config's ``mm_vision_tower``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from scitune.model.builders import assemble
    from scitune.model.vision import load_vision_encoder

    p = Path(folder)
    cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
    if "mm_vision_tower" not in cfg:
        raise DataError(f"{p}/config.json: no mm_vision_tower: not an original LLaVA checkpoint")
    tower = vision_tower or cfg["mm_vision_tower"]
    layer = int(cfg.get("mm_vision_select_layer", -2))
    select = {"patch": "patch", "cls_patch": "cls_patch"}.get(cfg.get("mm_vision_select_feature", "patch"))
    if select is None:
        raise DataError(f"{p}: mm_vision_select_feature {cfg['mm_vision_select_feature']!r} is not supported")
    vision, image_processor = load_vision_encoder("clip", tower, layer, select)
    if cfg.get("mm_hidden_size") not in (None, vision.hidden_size):
        raise DataError(f"{p}: mm_hidden_size {cfg['mm_hidden_size']} but the tower {tower} has {vision.hidden_size}")
    tokenizer = AutoTokenizer.from_pretrained(p, use_fast=True)
    v0 = PATCH_TOKEN in tokenizer.get_vocab()
    start_end = bool(cfg.get("mm_use_im_start_end", False))
    rule = ImageTokenRule(vision.num_tokens, vision.image_size, (), start_end)
    processor = Processor(
        tokenizer,
        image_processor,
        template or ("llava-v0" if v0 else "vicuna-v1"),
        rule,
        PATCH_TOKEN if v0 else DEFAULT_IMAGE_TOKEN,
        "pad" if cfg.get("image_aspect_ratio") == "pad" else "resize",  # LLaVA-1.5 trained and answers on padded images
    )
    sd = read_state_dict(p)
    name, proj_sd = _projector(cfg, sd)
    llm_cfg = AutoConfig.for_model(
        "llama",
        **{
            k: v
            for k, v in cfg.items()
            if not k.startswith("mm_") and k not in ("model_type", "architectures", "auto_map")
        },
    )
    llm = AutoModelForCausalLM.from_config(llm_cfg)
    llm_sd = {k: v for k, v in sd.items() if not k.startswith(_PROJECTOR_PREFIXES + _SKIPPED_PREFIXES)}
    missing, unexpected = llm.load_state_dict(llm_sd, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and llm_cfg.tie_word_embeddings)]
    if missing or unexpected:
        raise DataError(
            f"{p}: the LLM weights do not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    identity = {
        "vision": {"name": "clip", "path": tower, "feature_layer": layer, "select": select},
        "llm": {"path": None, "dtype": "float32", "attn": None},
        "imported_from": {"layout": "llava-original", "folder": str(p.resolve())},
    }
    model = assemble(vision, llm, name, identity, processor.image_token_id, len(processor.tokenizer))
    model.projector.load_state_dict(proj_sd)
    return Loaded(model.eval(), processor)
