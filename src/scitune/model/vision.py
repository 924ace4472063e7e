"""Vision encoders: any Hugging Face vision tower, timm and open_clip CNNs (LiMBeR's NF-ResNet50, CLIP RN50x16),
features from a chosen hidden layer; ``random_init`` keeps a fresh initialisation (LiMBeR's "Random" rows)."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch
from torch import nn

from scitune.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VisionSpec:
    """How to load one family of vision towers and its default weights."""

    family: str
    """clip | siglip | auto (transformers) | timm | open-clip."""
    default_path: str | None = None
    """Hub id used when the config gives no path."""
    arch: str | None = None
    """timm / open_clip model name (``nf_resnet50``, ``RN50x16``); transformers towers take theirs from the path."""


VISION_ENCODERS: Registry[VisionSpec] = Registry("vision encoder")
VISION_ENCODERS.add("clip-vit-l-14", VisionSpec("clip", "openai/clip-vit-large-patch14"))
VISION_ENCODERS.add("clip-vit-l-14-336", VisionSpec("clip", "openai/clip-vit-large-patch14-336"))
VISION_ENCODERS.add("clip-vit-b-16", VisionSpec("clip", "openai/clip-vit-base-patch16"))
VISION_ENCODERS.add("siglip-so400m", VisionSpec("siglip", "google/siglip-so400m-patch14-384"))
VISION_ENCODERS.add("beit-large", VisionSpec("auto", "microsoft/beit-large-patch16-224-pt22k"))
VISION_ENCODERS.add("beit-large-ft22k", VisionSpec("auto", "microsoft/beit-large-patch16-224-pt22k-ft22k"))
VISION_ENCODERS.add("resnet-50", VisionSpec("auto", "microsoft/resnet-50"))
VISION_ENCODERS.add("nf-resnet50", VisionSpec("timm", arch="nf_resnet50"))
VISION_ENCODERS.add("clip-rn50x16", VisionSpec("open-clip", arch="RN50x16"))
VISION_ENCODERS.add("clip", VisionSpec("clip"))
VISION_ENCODERS.add("siglip", VisionSpec("siglip"))
VISION_ENCODERS.add("auto", VisionSpec("auto"))

SELECTS = ("patch", "cls_patch", "pooled")

# Vision towers whose first hidden-state token is a CLS token (exact HF model_type values).
_CLS_MODEL_TYPES = {"clip_vision_model", "clip", "vit", "dinov2", "beit", "deit", "data2vec-vision"}


class VisionEncoder(nn.Module):
    """Wraps a HF vision model and returns the selected hidden layer's tokens, shape (B, N, D).

    Args:
        model: a HF vision model that accepts ``pixel_values`` and returns ``hidden_states``.
        feature_layer: index into ``hidden_states`` (-2 = penultimate layer).
        select: ``patch`` drops the CLS token when the model has one; ``cls_patch`` keeps it.
        has_cls: whether token 0 of the hidden states is a CLS token.
    """

    def __init__(
        self,
        model: nn.Module,
        feature_layer: int = -2,
        select: str = "patch",
        has_cls: bool = True,
        image_size: int = 224,
    ):
        super().__init__()
        if select not in SELECTS:
            raise ValueError(f"--model.vision.select must be one of {SELECTS}, got {select!r}")
        if select == "cls_patch" and not has_cls:
            raise ValueError("--model.vision.select=cls_patch needs a vision tower with a CLS token")
        self.model = model
        self.feature_layer = feature_layer
        self.select = select
        self.has_cls = has_cls
        self.image_size = int(getattr(model.config, "image_size", None) or image_size)
        self._num_tokens: int | None = None

    @property
    def config(self):
        return self.model.config

    @property
    def hidden_size(self) -> int:
        sizes = getattr(self.config, "hidden_sizes", None)  # CNNs (ResNet): channels of the last stage
        return int(sizes[-1]) if sizes and not hasattr(self.config, "patch_size") else int(self.config.hidden_size)

    @property
    def num_tokens(self) -> int:
        """Image tokens one image becomes (before a prefix projector)."""
        if self.select == "pooled":
            return 1
        if self._num_tokens is None:
            if hasattr(self.config, "patch_size") and hasattr(self.config, "image_size"):
                patches = (int(self.config.image_size) // int(self.config.patch_size)) ** 2
                self._num_tokens = patches + (1 if self.select == "cls_patch" else 0)
            else:  # any other tower: measure once on a blank image
                dev = next(self.model.parameters()).device
                with torch.no_grad():
                    self._num_tokens = int(
                        self(torch.zeros(1, 3, self.image_size, self.image_size, device=dev)).shape[1]
                    )
        return self._num_tokens

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        out = self.model(pixel_values.to(dtype), output_hidden_states=True)  # a ModelOutput by default
        feats = out.hidden_states[self.feature_layer]  # (B, 1 + P, D) with CLS, (B, P, D) without
        if feats.ndim == 4:  # a CNN feature map (B, C, H, W) -> a grid of H*W tokens (B, H*W, C)
            feats = feats.flatten(2).transpose(1, 2)
        elif self.has_cls and self.select == "patch":
            feats = feats[:, 1:]
        if self.select == "pooled":  # one vector per image, (B, 1, D)
            feats = feats.mean(dim=1, keepdim=True)
        return feats


def _vision_class(family: str):
    import transformers

    return {
        "clip": transformers.CLIPVisionModel,
        "siglip": transformers.SiglipVisionModel,
        "auto": transformers.AutoModel,
    }[family]


@contextlib.contextmanager
def _seeded(on: bool):
    """Fresh weights under seed 0 without touching the caller's RNG stream; a no-op when loading weights."""
    if not on:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def _hf_tower(family: str, path: str, dtype: torch.dtype, random_init: bool) -> nn.Module:
    """A transformers tower with its weights, or (``random_init``) built from the same config with fresh weights."""
    cls = _vision_class(family)
    if not random_init:
        model = cls.from_pretrained(path, dtype=dtype)
    elif family == "auto":
        from transformers import AutoConfig

        model = cls.from_config(AutoConfig.from_pretrained(path)).to(dtype)
    else:
        model = cls(cls.config_class.from_pretrained(path)).to(dtype)
    return model.vision_model if family == "auto" and hasattr(model, "vision_model") else model  # two-tower file


def load_vision_encoder(
    name: str,
    path: str | None,
    feature_layer: int = -2,
    select: str = "patch",
    dtype: torch.dtype = torch.float32,
    random_init: bool = False,
    model_args: dict | None = None,
) -> tuple[VisionEncoder, object]:
    """Load a vision tower and its image processor (transformers' ``from_pretrained``, or timm / open_clip weights).

    Args:
        name: a `VISION_ENCODERS` key.
        path: hub id or local folder (timm / open_clip: a local folder or weights file); ``None`` = the entry's
            default hub id.
        feature_layer: hidden layer to take features from (timm / open_clip: -1, the map before pooling).
        select: ``patch``, ``cls_patch`` or ``pooled``.
        dtype: weight dtype.
        random_init: the same architecture and image processor with freshly initialised weights (LiMBeR's
            "Random" rows); built under a fixed seed so a checkpoint rebuilds exactly the same weights.
        model_args: timm / open_clip architecture overrides (tiny test towers).

    Returns:
        ``(encoder, image_processor)``.
    """
    from transformers import AutoImageProcessor

    spec = VISION_ENCODERS.get(name)
    path = path or spec.default_path
    if spec.family in ("timm", "open-clip"):
        from scitune.model.towers import build_tower

        if feature_layer not in (-1, 0):
            raise ValueError(f"--model.vision.feature_layer: {name} gives its final feature map only; use -1")
        with _seeded(random_init):
            tower, processor = build_tower(spec.family.replace("-", "_"), spec.arch, path, random_init, model_args)
        return VisionEncoder(tower.to(dtype), -1, select, has_cls=False, image_size=tower.config.image_size), processor
    if not path:
        raise ValueError(f"vision encoder {name!r} has no default weights; set --model.vision.path")
    with _seeded(random_init):
        model = _hf_tower(spec.family, path, dtype, random_init)
    processor = AutoImageProcessor.from_pretrained(path)
    has_cls = spec.family == "clip" or getattr(model.config, "model_type", "") in _CLS_MODEL_TYPES
    size = getattr(processor, "crop_size", None) or getattr(processor, "size", None) or {}
    side = size.get("height") or size.get("shortest_edge") or 224 if isinstance(size, dict) else 224
    return VisionEncoder(model, feature_layer, select, has_cls, int(side)), processor
