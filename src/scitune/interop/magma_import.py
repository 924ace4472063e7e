"""Import MAGMA's released checkpoint layout (Aleph-Alpha/magma: a DeepSpeed ``mp_rank_00_model_states.pt`` whose
``module`` holds ``lm.*`` GPT-J weights with adapters wrapped in, and ``image_prefix.{enc,proj,ln}.*``) into a
scitune model: GPT-J as transformers' GPTJForCausalLM, the CLIP ResNet through open_clip, the prefix as ``linear-ln``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from scitune.io import DataError

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "mp_rank_00_model_states.pt"
IMAGE_TOKEN = "<|image|>"
"""MAGMA's image placeholder (the GPT-2 tokenizer's added cls token); its embeddings go first, then the text."""
# wrappers MAGMA puts around a GPT-J sub-block (magma/magma.py add_adapters): sequential MLP = Sequential(mlp, Adapter),
# sequential attention = AdapterWrapper(attn_block=...), parallel = Parallel{Adapter,AdapterWrapper}(module=...)
_WRAPPED = {"mlp.0.": ("mlp.", "mlp", "sequential"), "attn.attn_block.": ("attn.", "attn", "sequential")}
_PARALLEL = {"mlp.module.": ("mlp.", "mlp"), "attn.module.": ("attn.", "attn")}
_ADAPTER = re.compile(r"^(mlp|attn)\.(?:1\.)?(adapter\.(\d+)\.(weight|bias)|adapter_scale)$")
_RENAME = {"attn.attention.": "attn.", "mlp.c_fc.": "mlp.fc_in.", "mlp.c_proj.": "mlp.fc_out.", "ln_1.": "ln_1."}
_BUFFERS = ("attn.attention.bias", "attn.attention.masked_bias", "attn.bias", "attn.masked_bias")


def read_magma_state(path: str | os.PathLike[str]) -> tuple[Path, dict[str, torch.Tensor]]:
    """The model state dict of a MAGMA checkpoint (the file, or the folder holding ``mp_rank_00_model_states.pt``),
    read with ``torch.load(weights_only=True)`` only: a file that needs arbitrary unpickling is refused."""
    p = Path(path)
    f = p / CHECKPOINT_FILE if p.is_dir() else p
    if not f.is_file():
        raise DataError(f"{f}: no such file (a MAGMA checkpoint is a DeepSpeed {CHECKPOINT_FILE})")
    try:
        obj = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling problem is one line
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise DataError(f"{f}: refused: not readable with torch.load(weights_only=True) ({reason})") from None
    sd = obj.get("module", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not any(isinstance(k, str) and k.startswith("lm.") for k in sd):
        raise DataError(f"{f}: not MAGMA's layout (no 'module' state dict with lm.* keys)")
    return f, {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def split_magma_state(sd: dict[str, torch.Tensor], source: Path) -> dict[str, Any]:
    """MAGMA keys -> ``{"lm": GPT-J state dict (transformers names), "adapters": {(layer, "mlp"|"attn"): {...}},
    "kinds": {"mlp"|"attn": kind}, "enc": CLIP ResNet state, "proj": ..., "ln": ...}``; unknown keys are an error."""
    out: dict[str, Any] = {"lm": {}, "adapters": {}, "kinds": {}, "enc": {}, "proj": {}, "ln": {}}
    unknown: list[str] = []
    for key, value in sd.items():
        if key.startswith(("word_embedding.", "transformer.")):  # aliases of lm.transformer.wte / lm.transformer.h
            continue
        for prefix, part in (("image_prefix.enc.", "enc"), ("image_prefix.proj.", "proj"), ("image_prefix.ln.", "ln")):
            if key.startswith(prefix):
                out[part][key[len(prefix) :]] = value
                break
        else:
            m = re.match(r"^lm\.transformer\.h\.(\d+)\.(.+)$", key)
            if m:
                if not _block_key(int(m.group(1)), m.group(2), value, out):
                    unknown.append(key)
            elif key.startswith("lm.") and not key.endswith(_BUFFERS):
                out["lm"][key[len("lm.") :]] = value
            elif not key.endswith(_BUFFERS):
                unknown.append(key)
    if unknown:
        raise DataError(f"{source}: keys outside MAGMA's GPT-J layout, e.g. {', '.join(sorted(unknown)[:3])}")
    return out


def _block_key(layer: int, rest: str, value: torch.Tensor, out: dict[str, Any]) -> bool:
    """File one ``lm.transformer.h.<layer>.<rest>`` entry; False when it is not part of MAGMA's GPT-J block."""
    if rest.endswith(_BUFFERS):
        return True
    for wrapped, (base, where, kind) in _WRAPPED.items():
        if rest.startswith(wrapped):
            out["kinds"].setdefault(where, kind)
            rest = base + rest[len(wrapped) :]
    for wrapped, (base, where) in _PARALLEL.items():
        if rest.startswith(wrapped):
            out["kinds"][where] = "parallel" if out["kinds"].get(where) != "scaled-parallel" else "scaled-parallel"
            rest = base + rest[len(wrapped) :]
    a = _ADAPTER.match(rest)
    if a:
        where = a.group(1)
        if a.group(2) == "adapter_scale":
            out["kinds"][where] = "scaled-parallel"
            out["adapters"].setdefault((layer, where), {})["scale"] = value
        else:
            if value.ndim == 1 and a.group(4) == "weight":
                raise DataError("MAGMA adapters with a LayerNorm (add_layernorm) are not supported")
            name = {"0": "down", "2": "up"}.get(a.group(3))
            if name is None:
                return False
            out["adapters"].setdefault((layer, where), {})[f"{name}.{a.group(4)}"] = value
        return True
    for old, new in _RENAME.items():
        if rest.startswith(old):
            out["lm"][f"transformer.h.{layer}.{new}{rest[len(old) :]}"] = value
            return True
    return False  # ln_2, out_proj.bias, ...: not GPT-J's parallel block


def _adapter_name(kinds: dict[str, str], source: Path) -> str | None:
    """The scitune `ADAPTERS` key of MAGMA's adapter layout (one kind for all adapted sub-blocks)."""
    if not kinds:
        return None
    if len(set(kinds.values())) > 1:
        raise DataError(f"{source}: mixed adapter kinds {kinds}; scitune's adapters are one kind per model")
    kind = next(iter(kinds.values()))
    where = "" if len(kinds) == 2 else f"-{next(iter(kinds))}"
    return ("magma" if kind == "sequential" else kind) + where


def _adapter_state(adapters: dict[tuple[int, str], dict[str, torch.Tensor]], kind: str) -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {}
    for (layer, where), params in adapters.items():
        for k, v in params.items():
            sd[f"adapters.{layer}_{where}.{k}"] = v.reshape(()) if k == "scale" else v
        if kind == "sequential":  # MAGMA's sequential adapter adds its output unscaled
            sd[f"adapters.{layer}_{where}.scale"] = torch.ones(())
    return sd


def import_magma(
    checkpoint: str | os.PathLike[str],
    llm: str,
    tokenizer: str | None = None,
    encoder: str = "clip-rn50x16",
    encoder_args: dict[str, Any] | None = None,
    dtype: str = "float32",
    image_size: int | None = None,
):
    """A MAGMA checkpoint as a scitune model and processor (template ``plain``: image prefix, then text).

    Args:
        checkpoint: ``mp_rank_00_model_states.pt`` or the folder holding it.
        llm: a transformers GPT-J folder or hub id; only its config is read (the weights come from the checkpoint).
        tokenizer: MAGMA's GPT-2 tokenizer (``<|image|>`` is added as MAGMA did); empty = ``llm``'s.
        encoder: the `VISION_ENCODERS` key of MAGMA's image encoder (``clip-rn50x16`` = ``clip_resnet_large``).
        encoder_args: the encoder's architecture; empty = depth and width read from the checkpoint's weights.
        dtype: weight dtype of the imported model.
        image_size: the encoder's input side; empty = the encoder's own (384 for RN50x16, as MAGMA_v1).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from scitune.loader import Loaded
    from scitune.model.builders import assemble
    from scitune.model.llm import DTYPES
    from scitune.model.towers import load_net_weights
    from scitune.model.vision import load_vision_encoder
    from scitune.processor import ImageTokenRule, Processor

    f, sd = read_magma_state(checkpoint)
    parts = split_magma_state(sd, f)
    cfg = AutoConfig.from_pretrained(llm)
    if cfg.model_type != "gptj":
        raise DataError(f"{llm}: model_type {cfg.model_type!r}; MAGMA's language model is GPT-J (give its config)")
    rows = int(parts["lm"]["transformer.wte.weight"].shape[0])
    cfg.vocab_size = rows
    lm = AutoModelForCausalLM.from_config(cfg).to(DTYPES[dtype])
    lm_sd = {**parts["lm"]}
    lm_sd.setdefault("lm_head.bias", torch.zeros(rows))  # a head saved without bias adds none
    missing, unexpected = lm.load_state_dict(lm_sd, strict=False)
    if missing or unexpected:
        raise DataError(
            f"{f}: GPT-J weights do not fit {llm}'s config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    args = encoder_args or resnet_args(parts["enc"], encoder, image_size, f)
    vision, image_processor = load_vision_encoder(encoder, None, -1, "patch", random_init=True, model_args=args)
    load_net_weights(vision.model.net, parts["enc"], f, "")
    tok = AutoTokenizer.from_pretrained(tokenizer or llm)
    processor = Processor(
        tok, image_processor, "plain", ImageTokenRule(vision.num_tokens, vision.image_size), IMAGE_TOKEN
    )
    if len(processor.tokenizer) != rows:
        raise DataError(
            f"{f}: the tokenizer has {len(processor.tokenizer)} tokens with {IMAGE_TOKEN}, the checkpoint embeds {rows}: "
            "give MAGMA's GPT-2 tokenizer (--tokenizer)"
        )
    name = _adapter_name(parts["kinds"], f)
    factor = 4
    if name:
        down = next(p["down.weight"] for p in parts["adapters"].values())
        factor = int(down.shape[1]) // int(down.shape[0])
    projector = "linear-ln" if parts["ln"] else "linear"
    identity = {
        "vision": {"name": encoder, "path": None, "feature_layer": -1, "select": "patch"},
        "llm": {"path": llm if not os.path.isdir(llm) else os.path.abspath(llm), "dtype": dtype, "attn": None},
    }
    model = assemble(vision, lm, projector, identity, processor.image_token_id, rows, 0, name, factor)
    proj = {f"linear.{k}": v for k, v in parts["proj"].items()} | {f"norm.{k}": v for k, v in parts["ln"].items()}
    _load_strict(model.projector, proj, f, "image prefix")
    if name:
        _load_strict(
            model.adapters, _adapter_state(parts["adapters"], next(iter(parts["kinds"].values()))), f, "adapters"
        )
    log.info("%s: MAGMA checkpoint imported (encoder %s, adapters %s, projector %s)", f, encoder, name, projector)
    return Loaded(model.to(DTYPES[dtype]).eval(), processor)


def resnet_args(enc: dict[str, torch.Tensor], encoder: str, image_size: int | None, source: Path) -> dict[str, Any]:
    """A CLIP ResNet's ``ModifiedResNet`` arguments from its weights (blocks per stage, width = 2 x the first stem
    conv's channels); the input side from ``image_size`` or the named encoder's (attention pooling, which fixed it,
    is not in MAGMA's checkpoint)."""
    from scitune.model.towers import open_clip_args
    from scitune.model.vision import VISION_ENCODERS

    spec = VISION_ENCODERS.get(encoder)
    if spec.family != "open-clip" or "conv1.weight" not in enc:
        raise DataError(f"{source}: MAGMA's image encoder is not a CLIP ResNet here (only clip_resnet* is supported)")
    layers = [len({k.split(".")[1] for k in enc if k.startswith(f"layer{i}.")}) for i in range(1, 5)]
    args = open_clip_args(spec.arch)
    args.update(layers=layers, width=int(enc["conv1.weight"].shape[0]) * 2)
    if image_size:
        args["image_size"] = int(image_size)
    return args


def _load_strict(module: torch.nn.Module, sd: dict[str, torch.Tensor], source: Path, what: str) -> None:
    own = module.state_dict()
    if set(own) != set(sd) or any(own[k].shape != sd[k].shape for k in sd):
        raise DataError(f"{source}: MAGMA's {what} do not match (expected {len(own)} tensors of the model's shapes)")
    module.load_state_dict(sd)
