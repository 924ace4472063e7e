"""The Registry class, and a contract test for every entry of every registry."""

from __future__ import annotations

import inspect

import pytest
import torch

from scitune.config.io import PRESETS
from scitune.data.templates import CHAT_TEMPLATES, ChatTemplate, get_template
from scitune.model.llm import LLMS, llm_spec
from scitune.model.projector import PROJECTORS, build_projector
from scitune.model.vision import VISION_ENCODERS, load_vision_encoder
from scitune.registry import Registry
from scitune.sources.converters import CONVERTERS


def test_registry_rules():
    r: Registry = Registry("thing")

    @r.register("a-thing")
    def f():
        return 1

    assert r.get("a-thing") is f and r.names() == ["a-thing"] and "a-thing" in r
    with pytest.raises(ValueError, match="already registered"):
        r.add("a-thing", f)
    with pytest.raises(KeyError, match="known: a-thing"):
        r.get("a_thing")  # exact keys only, no fuzzy matching
    with pytest.raises(ValueError, match="kebab-case"):
        r.add("Bad_Name", f)


@pytest.mark.parametrize("name", PROJECTORS.names())
def test_projector_contract(name):
    dims = (16, 16) if name == "identity" else (16, 24)
    if name == "linear-prefix":  # one pooled vector per image -> k tokens
        proj = build_projector(name, *dims, num_tokens=3)
        assert proj(torch.randn(2, 1, 16)).shape == (2, 3, 24)
        return
    proj = build_projector(name, *dims)
    x = torch.randn(2, 5, dims[0])
    assert proj(x).shape == (2, 5, dims[1])


def test_identity_projector_rejects_width_change():
    with pytest.raises(ValueError, match="equal widths"):
        build_projector("identity", 16, 32)


@pytest.fixture(scope="module")
def tiny_towers(tmp_path_factory):
    """One tiny saved tower per family: CLIP and SigLIP."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        SiglipImageProcessor,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    root = tmp_path_factory.mktemp("towers")
    small = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    CLIPVisionModel(CLIPVisionConfig(**small)).save_pretrained(root / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root / "clip")
    SiglipVisionModel(SiglipVisionConfig(**small)).save_pretrained(root / "siglip")
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "siglip")
    return {"clip": root / "clip", "siglip": root / "siglip", "auto": root / "clip"}


@pytest.mark.parametrize("name", VISION_ENCODERS.names())
def test_vision_encoder_contract(name, tiny_towers):
    spec = VISION_ENCODERS.get(name)
    if spec.family not in tiny_towers:  # timm / open_clip towers: tests/unit/model/test_limber_encoders.py
        pytest.skip(f"{spec.family} towers are built tiny in test_limber_encoders.py")
    enc, proc = load_vision_encoder(name, str(tiny_towers[spec.family]))  # tiny weights, same loading code
    pix = proc(images=[__import__("PIL.Image").Image.new("RGB", (50, 40))], return_tensors="pt")["pixel_values"]
    feats = enc(pix)
    assert feats.shape == (1, enc.num_tokens, enc.hidden_size) == (1, 16, 16)
    if spec.default_path:
        assert "/" in spec.default_path  # a hub id


def test_cls_patch_keeps_the_cls_token(tiny_towers):
    enc, _ = load_vision_encoder("clip", str(tiny_towers["clip"]), select="cls_patch")
    assert enc(torch.randn(1, 3, 32, 32)).shape[1] == 17
    with pytest.raises(ValueError, match="CLS"):
        load_vision_encoder("siglip", str(tiny_towers["siglip"]), select="cls_patch")


@pytest.mark.parametrize("name", LLMS.names())
def test_llm_spec_contract(name):
    import transformers

    spec = LLMS.get(name)
    if spec.decoder_layer:
        module = importlib_module(name)
        assert hasattr(module, spec.decoder_layer), f"{spec.decoder_layer} not in {module.__name__}"
    assert llm_spec(name.replace("-", "_")) is spec
    assert transformers is not None


def importlib_module(name: str):
    import importlib

    mt = name.replace("-", "_")
    return importlib.import_module(f"transformers.models.{mt}.modeling_{mt}")


def test_unknown_model_type_gets_the_generic_spec():
    assert llm_spec("some_new_arch") is LLMS.get("causal-lm")


@pytest.mark.parametrize("name", CHAT_TEMPLATES.names())
def test_template_contract(name):
    from scitune.data.conversation import Message
    from scitune.model.builders import tiny_tokenizer

    t = get_template(name)
    assert isinstance(t, ChatTemplate) and t.name == name
    tok = tiny_tokenizer()
    segs = t.render([Message("user", "<image> hi"), Message("assistant", "ok")], tok)
    assert any(s.trainable for s in segs) and t.stop(tok)


@pytest.mark.parametrize("name", CONVERTERS.names())
def test_converter_contract(name):
    conv = CONVERTERS.get(name)
    params = inspect.signature(conv.run).parameters
    assert {"src", "out"} <= set(params)
    assert (conv.__doc__ or "").strip()


@pytest.mark.parametrize("name", PRESETS.names())
def test_preset_file_exists(name):
    assert PRESETS.get(name).is_file()
