"""Vision towers that transformers does not ship: timm CNNs (NF-ResNet50) and open_clip's CLIP ResNets (RN50x16),
wrapped to look like a HF vision model to `VisionEncoder` (a feature map before pooling as the last hidden state)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from scitune.extras import MissingExtra
from scitune.extras import load as load_extra
from scitune.io import DataError

CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
# classifier heads that a pooled-feature tower drops (timm names); any other unused key is an error
_HEAD_PREFIXES = ("head.", "fc.", "classifier.", "head_drop.", "attnpool.")
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _import(library: str):
    """timm / open_clip through `scitune.extras`; a wheel that is present but cannot import (torchvision built for
    another torch) is reported in one line too."""
    module = {"timm": "timm", "open_clip": "open_clip"}[library]
    try:
        return load_extra(f"the {library} vision encoders", module)
    except (RuntimeError, OSError) as e:  # e.g. "operator torchvision::nms does not exist"
        raise MissingExtra(
            f"{module} is installed but does not import ({e}); install a torchvision built for this torch"
        ) from None


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or from a torch file read with ``weights_only=True`` (TorchScript archives,
    as OpenAI's CLIP files are, give their parameters); anything else is refused."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickles with code, truncated files: one line
        try:
            return {k: v for k, v in torch.jit.load(str(path), map_location="cpu").state_dict().items()}
        except Exception:  # noqa: BLE001
            raise DataError(f"{path}: not a weights-only torch file or safetensors ({type(e).__name__})") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise DataError(f"{path}: holds a {type(sd).__name__}, not a state dict")
    return sd


def _weights_in(path: str | None) -> tuple[dict[str, Any], Path | None]:
    """``(folder config, weight file)`` of a local folder or file; ``({}, None)`` for no path."""
    if not path:
        return {}, None
    p = Path(path)
    if p.is_file():
        return {}, p
    if not p.is_dir():
        raise DataError(f"{p}: no such file or folder (timm/open_clip encoders load local weights)")
    cfg = json.loads((p / CONFIG_FILE).read_text(encoding="utf-8")) if (p / CONFIG_FILE).is_file() else {}
    files = [p / f for f in WEIGHT_FILES if (p / f).is_file()]
    if not files:
        raise DataError(f"{p}: no weights file (one of {', '.join(WEIGHT_FILES)})")
    return cfg, files[0]


class _Tower(nn.Module):
    """The common HF-like surface: ``config`` (image_size, hidden_size, model_type), ``forward`` returning
    ``hidden_states`` = (final feature map (B, C, H, W),) and ``save_pretrained`` to a folder it loads back from."""

    library = ""

    def __init__(self, net: nn.Module, arch: str, model_args: dict[str, Any], image_size: int, width: int):
        super().__init__()
        self.net, self.arch, self.model_args = net, arch, dict(model_args)
        self.config = SimpleNamespace(image_size=image_size, hidden_size=width, model_type=self.library)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = True, return_dict: bool = True):
        return SimpleNamespace(hidden_states=(self.features(pixel_values),))

    def save_pretrained(self, folder: str | Path, state_dict: dict | None = None, safe_serialization: bool = True):
        """Write ``config.json`` + ``model.safetensors`` (the bare network's keys), loadable by `build_tower`."""
        from safetensors.torch import save_file

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        sd = state_dict if state_dict is not None else self.state_dict()
        sd = {k[len("net.") :] if k.startswith("net.") else k: v.contiguous() for k, v in sd.items()}
        save_file(sd, str(out / "model.safetensors"))
        cfg = {"library": self.library, "architecture": self.arch, "model_args": self.model_args}
        if self.library == "timm":
            cfg["image_size"] = int(self.config.image_size)
        (out / CONFIG_FILE).write_text(json.dumps(cfg, indent=2), encoding="utf-8")


class TimmTower(_Tower):
    """A timm model's ``forward_features``: the map before global pooling (LiMBeR's NF-ResNet50, (B, 2048, 7, 7))."""

    library = "timm"

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)


class OpenClipResNetTower(_Tower):
    """open_clip's ``ModifiedResNet`` without its attention pooling (as MAGMA removed it): (B, C, H/32, W/32)."""

    library = "open_clip"

    def features(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.stem(x.to(n.conv1.weight.dtype))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))


def _timm_net(arch: str, model_args: dict[str, Any]) -> nn.Module:
    timm = _import("timm")
    return timm.create_model(arch, pretrained=False, **{**model_args, "num_classes": 0})


def open_clip_args(arch: str) -> dict[str, Any]:
    """``ModifiedResNet`` arguments of a named open_clip model (RN50x16: layers 6-8-18-8, width 96, image 384)."""
    open_clip = _import("open_clip")
    cfg = open_clip.get_model_config(arch)
    if not cfg or not isinstance(cfg["vision_cfg"].get("layers"), (list, tuple)):
        raise ValueError(f"open_clip model {arch!r} is not a CLIP ResNet (RN50, RN101, RN50x4, RN50x16, RN50x64)")
    v = cfg["vision_cfg"]
    return {
        "layers": list(v["layers"]),
        "output_dim": cfg["embed_dim"],
        "heads": v["width"] * 32 // v.get("head_width", 64),
        "image_size": v["image_size"],
        "width": v["width"],
    }


def _open_clip_net(model_args: dict[str, Any]) -> nn.Module:
    _import("open_clip")
    from open_clip.modified_resnet import ModifiedResNet

    net = ModifiedResNet(**{**model_args, "layers": tuple(model_args["layers"])})
    net.attnpool = nn.Identity()  # features before pooling, as MAGMA and LiMBeR used them
    return net


def build_tower(
    library: str,
    arch: str,
    path: str | None,
    random_init: bool = False,
    model_args: dict[str, Any] | None = None,
    image_size: int | None = None,
) -> tuple[_Tower, object]:
    """A timm / open_clip tower and a matching HF image processor.

    Args:
        library: ``timm`` or ``open_clip``.
        arch: timm model name (``nf_resnet50``) or open_clip model name (``RN50x16``).
        path: a local folder (``config.json`` + weights, as timm's hub folders and `_Tower.save_pretrained` write) or
            a weights file (an open_clip / OpenAI CLIP file: its ``visual.*`` keys are used); None = no weights.
        random_init: keep the fresh initialisation (LiMBeR's "Random" rows); the weights file is not read.
        model_args: architecture overrides (tiny test models); a saved folder's own args win.
        image_size: timm input side (default: the model's pretrained input size; a saved folder's own wins).
    """
    folder_cfg, weight_file = _weights_in(path)
    if folder_cfg.get("architecture") and folder_cfg["architecture"] != arch:
        raise DataError(f"{path}: holds {folder_cfg['architecture']!r}, the encoder is {arch!r}")
    args = {**(model_args or {}), **folder_cfg.get("model_args", {})}
    if weight_file is None and not random_init:
        raise ValueError(f"vision encoder {arch!r} loads local weights: set --model.vision.path (or random_init)")
    if library == "timm":
        net = _timm_net(arch, args)
        size = int(folder_cfg.get("image_size") or image_size or _timm_size(net))
        tower: _Tower = TimmTower(net, arch, args, size, int(net.num_features))
    else:
        args = args or open_clip_args(arch)
        net = _open_clip_net(args)
        tower = OpenClipResNetTower(net, arch, args, int(args["image_size"]), int(args["width"]) * 32)
    if weight_file is not None and not random_init:
        load_net_weights(tower.net, read_weights(weight_file), weight_file, "visual." if library == "open_clip" else "")
    return tower.eval(), _image_processor(tower, library)


def _timm_size(net: nn.Module) -> int:
    size = (getattr(net, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))
    return int(size[-1])


def load_net_weights(net: nn.Module, sd: dict[str, torch.Tensor], source: Path, strip: str) -> None:
    """Load ``sd`` strictly, apart from the classifier head / attention pooling the tower does not use."""
    if strip and any(k.startswith(strip) for k in sd):
        sd = {k[len(strip) :]: v for k, v in sd.items() if k.startswith(strip)}
    sd = {k: v for k, v in sd.items() if not k.startswith(_HEAD_PREFIXES)}
    missing, unexpected = net.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise DataError(
            f"{source}: weights do not fit the encoder (missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )


def _image_processor(tower: _Tower, library: str):
    """A `CLIPImageProcessor` that resizes, centre-crops and normalises as the tower's own eval transform does."""
    from transformers import CLIPImageProcessor

    size = int(tower.config.image_size)
    if library == "timm":
        pc = getattr(tower.net, "pretrained_cfg", None) or {}
        mean, std = pc.get("mean", (0.485, 0.456, 0.406)), pc.get("std", (0.229, 0.224, 0.225))
        resize = int(math.floor(size / float(pc.get("crop_pct", 0.875))))
    else:
        mean, std, resize = OPENAI_MEAN, OPENAI_STD, size
    return CLIPImageProcessor(
        size={"shortest_edge": resize},
        crop_size={"height": size, "width": size},
        image_mean=list(mean),
        image_std=list(std),
    )
