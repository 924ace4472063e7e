"""What vLLM's LLaVA loaders read from an exported folder, checked without vLLM: the projector's activation name, its
weight shapes as vLLM builds them from the config, the vision tower, the image-token fields and the weight names after
vLLM's renaming. Data below is copied from vLLM 0.34.0 (``vllm/model_executor/layers/activation.py``,
``vllm/model_executor/models/llava.py`` and ``llava_next.py``, ``clip.py``, ``siglip.py``, ``vision.py``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

VLLM_VERSION_READ = "0.34.0"
VLLM_ACTIVATIONS = frozenset(
    {
        "gelu",
        "gelu_fast",
        "gelu_new",
        "gelu_pytorch_tanh",
        "relu",
        "relu2",
        "silu",
        "swish",
        "quick_gelu",
        "tanh",
        "sigmoid",
        "xielu",
    }
)
"""``_ACTIVATION_REGISTRY`` keys of vLLM 0.34.0: ``get_act_fn(name.lower())`` raises for any other name (it also
maps ``torch.nn.modules.*.Identity``, a name transformers does not know)."""
VLLM_VISION_TYPES = ("clip_vision_model", "siglip_vision_model")
"""Vision towers of `init_vision_tower_for_llava` that scitune exports (vLLM also has Pixtral)."""
VLLM_PREFIXES = (
    "vision_tower.",
    "multi_modal_projector.",
    "language_model.model.",
    "language_model.lm_head.",
    "image_newline",
)
"""Top-level module names of vLLM's Llava(Next)ForConditionalGeneration (after its ``hf_to_vllm_mapper``)."""
_RENAMES = (
    ("model.language_model.", "language_model.model."),
    ("model.vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("model.image_newline", "image_newline"),
    ("lm_head.", "language_model.lm_head."),
)
"""vLLM's ``hf_to_vllm_mapper`` (orig_to_new_prefix) for checkpoints saved after transformers 4.52."""


def weight_shapes(folder: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Every tensor's name and shape in a folder's safetensors files (headers only, no weights read)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            for k in f.keys():
                shapes[k] = tuple(f.get_slice(k).get_shape())
    return shapes


def _layer_count(feature_layer: Any, num_layers: int) -> int:
    layers = feature_layer if isinstance(feature_layer, list) else [feature_layer]
    return max(num_layers + i + 1 if i < 0 else i for i in layers)


def vllm_llava_problems(folder: str | os.PathLike[str]) -> list[str]:
    """Why vLLM's ``LlavaForConditionalGeneration`` / ``LlavaNextForConditionalGeneration`` would not load ``folder``
    (or would load it with other weights): an empty list when it reads the folder as transformers does.

    Reads ``config.json`` and the safetensors headers as vLLM's loader does: ``get_act_fn(projector_hidden_act)``,
    ``linear_1`` (text_hidden, vision_hidden x number of feature layers) and ``linear_2`` (text_hidden, text_hidden)
    with bias as ``multimodal_projector_bias`` says, a CLIP or SigLIP tower built up to the feature layer, the image
    token inside the vocabulary and ``image_seq_length`` equal to vLLM's token count, every weight under a module vLLM
    has.
    """
    cfg = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    problems = []
    arch = cfg.get("architectures") or []
    want = {"llava": "LlavaForConditionalGeneration", "llava_next": "LlavaNextForConditionalGeneration"}
    if want.get(cfg.get("model_type")) not in arch:
        problems.append(f"architectures {arch} (model_type {cfg.get('model_type')!r}) name no LLaVA class vLLM has")
    act = cfg.get("projector_hidden_act")
    if act is None and cfg.get("vision_config", {}).get("hidden_act") == "gelu":
        act = "gelu"  # vLLM's own default for that case
    if not isinstance(act, str) or act.lower() not in VLLM_ACTIVATIONS:
        problems.append(f"projector_hidden_act {act!r} is not an activation vLLM knows ({sorted(VLLM_ACTIVATIONS)})")
    vc, tc = cfg.get("vision_config", {}), cfg.get("text_config", {})
    if vc.get("model_type") not in VLLM_VISION_TYPES:
        problems.append(f"vision tower {vc.get('model_type')!r} is not one vLLM builds for LLaVA ({VLLM_VISION_TYPES})")
    layer = cfg.get("vision_feature_layer")
    if not isinstance(layer, int | list):
        problems.append(f"vision_feature_layer {layer!r} is neither an int nor a list")
        layer = -1
    n_layers = int(vc.get("num_hidden_layers", 0))
    if not 0 < _layer_count(layer, n_layers) <= n_layers:
        problems.append(f"vision_feature_layer {layer} is outside the tower's {n_layers} layers")
    strategy = cfg.get("vision_feature_select_strategy")
    if strategy not in ("default", "full"):
        problems.append(f"vision_feature_select_strategy {strategy!r} is not 'default' or 'full'")
    grid = int(vc.get("image_size", 0)) // max(int(vc.get("patch_size", 1)), 1)
    encoder_tokens = grid * grid + (1 if vc.get("model_type") == "clip_vision_model" else 0)
    tokens = encoder_tokens - 1 if strategy == "default" else encoder_tokens
    if cfg.get("model_type") == "llava" and cfg.get("image_seq_length") not in (None, tokens):
        problems.append(f"image_seq_length {cfg.get('image_seq_length')} but vLLM counts {tokens} tokens an image")
    image_token = cfg.get("image_token_index", cfg.get("image_token_id"))
    if not isinstance(image_token, int) or not 0 <= image_token < int(tc.get("vocab_size", 0)):
        problems.append(f"image_token_index {image_token!r} is not inside the LM's vocabulary")
    problems += _weight_problems(folder, cfg, vc, tc, layer)
    return problems


def _weight_problems(folder: str | os.PathLike[str], cfg: dict, vc: dict, tc: dict, layer: Any) -> list[str]:
    shapes = {}
    for name, shape in weight_shapes(folder).items():
        for old, new in _RENAMES:
            if name.startswith(old):
                name = new + name[len(old) :]
                break
        shapes[name] = shape
    problems = [f"weight {k} is under no module vLLM has" for k in shapes if not k.startswith(VLLM_PREFIXES)]
    d_text, d_vision = int(tc.get("hidden_size", 0)), int(vc.get("hidden_size", 0))
    n_feature_layers = len(layer) if isinstance(layer, list) and cfg.get("model_type") == "llava_next" else 1
    bias = bool(cfg.get("multimodal_projector_bias", True))
    want = {
        "multi_modal_projector.linear_1.weight": (d_text, d_vision * n_feature_layers),
        "multi_modal_projector.linear_2.weight": (d_text, d_text),
    }
    if bias:
        want |= {"multi_modal_projector.linear_1.bias": (d_text,), "multi_modal_projector.linear_2.bias": (d_text,)}
    for k, shape in want.items():
        if shapes.get(k) != shape:
            problems.append(f"{k} has shape {shapes.get(k)}; vLLM builds {shape} from the config")
    if not bias and any(k.endswith(".bias") and k.startswith("multi_modal_projector.") for k in shapes):
        problems.append("projector biases are saved but multimodal_projector_bias is false: vLLM drops them")
    if not any(k.startswith("vision_tower.vision_model.") for k in shapes):
        problems.append("no vision_tower.vision_model.* weights (vLLM's CLIP/SigLIP towers keep that prefix)")
    return problems
