"""The ``pad`` image aspect (LLaVA-1.5's ``expand2square`` with the processor's mean colour) beside ``resize``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from scitune.loader import load, save_checkpoint, tiny_vlm
from scitune.processor import expand_to_square


def llava_expand2square(pil_img, background_color):
    """LLaVA-1.5's function (llava/mm_utils.py), written out as the reference behaviour."""
    width, height = pil_img.size
    if width == height:
        return pil_img
    if width > height:
        result = Image.new(pil_img.mode, (width, width), background_color)
        result.paste(pil_img, (0, (width - height) // 2))
        return result
    result = Image.new(pil_img.mode, (height, height), background_color)
    result.paste(pil_img, ((height - width) // 2, 0))
    return result


@pytest.mark.parametrize("size", [(100, 37), (37, 100), (64, 64), (33, 32), (1, 9)])
def test_pad_matches_llava_expand2square(size):
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    fill = (122, 116, 104)  # CLIP's image_mean * 255, truncated as LLaVA does
    got, want = expand_to_square(image, fill), llava_expand2square(image, fill)
    assert got.size == want.size and np.array_equal(np.asarray(got), np.asarray(want))


def test_processor_pads_with_its_mean_colour_and_keeps_the_mode(tmp_path):
    model, processor = tiny_vlm()
    padded = processor.replace(image_aspect="pad")
    image = Image.new("RGB", (96, 24), (255, 0, 0))  # a wide red strip: resize+crop cuts its sides, pad keeps it all
    mean = tuple(int(m * 255) for m in processor.base_image_processor.image_mean)
    want = processor.images([llava_expand2square(image, mean)])["pixel_values"]
    got = padded.images([image])["pixel_values"]
    assert torch.equal(got, want)
    assert not torch.equal(got, processor.images([image])["pixel_values"])  # resize differs on a non-square image
    ck = save_checkpoint(model, padded, tmp_path / "ck")
    assert load(ck).processor.image_aspect == "pad"  # saved in processor.json, so inference pads as training did


def test_pad_is_refused_with_anyres_and_unknown_modes():
    from scitune.config.schema import VisionConfig

    with pytest.raises(ValueError, match="not with --model.vision.anyres"):
        VisionConfig(image_aspect="pad", anyres=["1x1", "1x2"])
    _, processor = tiny_vlm()
    with pytest.raises(ValueError, match="must be one of"):
        processor.replace(image_aspect="stretch")
