"""The llava-next AnyRes layout against transformers' LLaVA-NeXT: grid choice, unpadding and the token-count rule
against `LlavaNextProcessor`, feature packing against `LlavaNextModel.pack_image_features`, and the export to
`LlavaNextForConditionalGeneration` + `LlavaNextProcessor` (ids, pixels, logits, greedy tokens, import round trip)."""

from __future__ import annotations

import random

import pytest
import torch
from PIL import Image

from scitune.data.conversation import Message
from scitune.interop.hf_llava import export_hf, import_hf
from scitune.interop.hf_llava_next import to_hf_llava_next
from scitune.loader import tiny_vlm
from scitune.model.anyres import grid_pinpoints, grids_from_pinpoints, parse_grids, select_grid, unpadded_window
from scitune.processor import ImageTokenRule

GRIDS = ["1x1", "1x2", "2x1", "2x2", "1x3"]
LLAVA_NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]  # llava-v1.6, (height, width)
SIZES = [(32, 32), (64, 32), (32, 64), (100, 30), (30, 100), (50, 50), (37, 91), (200, 61), (640, 480), (1, 77)]


def _image(size: tuple[int, int]) -> Image.Image:
    """A picture with structure everywhere, so that a wrong tile, row or column shows in the pixels and logits."""
    return Image.radial_gradient("L").convert("RGB").resize(size).rotate(17, fillcolor=(200, 40, 90))


def test_pinpoints_are_height_width_pixels_of_the_rows_x_cols_grids():
    grids = parse_grids(["1x2", "2x1", "2x2", "3x1", "1x3"])  # rows x cols of tiles
    assert grid_pinpoints(grids, 336) == LLAVA_NEXT_PINPOINTS  # [rows * 336, cols * 336] = [height, width]
    assert grids_from_pinpoints(LLAVA_NEXT_PINPOINTS, 336) == grids
    with pytest.raises(ValueError, match="whole number of 336 px tiles"):
        grids_from_pinpoints([[336, 500]], 336)


def test_grid_choice_and_unpadding_agree_with_transformers():
    from transformers.image_processing_utils import select_best_resolution
    from transformers.models.llava_next.modeling_llava_next import unpad_image

    rng = random.Random(0)
    for _ in range(600):
        width, height = rng.randint(1, 2500), rng.randint(1, 2500)
        grids = tuple(dict.fromkeys((rng.randint(1, 4), rng.randint(1, 4)) for _ in range(rng.randint(1, 6))))
        tile, side = rng.choice([(32, 4), (336, 24), (384, 27)])
        best = select_best_resolution((height, width), grid_pinpoints(grids, tile))  # transformers: (height, width)
        rows, cols = select_grid((width, height), grids, tile)
        assert (rows * tile, cols * tile) == tuple(best), (width, height, grids)
        feature_map = torch.arange(rows * side * cols * side).reshape(1, rows * side, cols * side)
        (top, bottom), (left, right) = unpadded_window((width, height), rows * side, cols * side)
        assert torch.equal(feature_map[:, top:bottom, left:right], unpad_image(feature_map, (height, width)))


@pytest.mark.parametrize(
    "grids,tile,patch",
    [
        (["1x1", "1x2", "2x1", "2x2"], 32, 8),
        (GRIDS, 32, 8),
        (["1x2", "2x1", "2x2", "3x1", "1x3"], 336, 14),  # llava-v1.6's pinpoints on CLIP ViT-L/14-336
        (["1x1", "2x2", "3x3", "1x4", "4x1", "2x3"], 384, 16),
    ],
)
def test_token_count_rule_equals_llava_next_processor(grids, tile, patch):
    import transformers
    from transformers import LlavaNextProcessor

    # the PIL image processor: CLIPImageProcessorPil on transformers 5, CLIPImageProcessor on 4.x
    CLIPImageProcessorPil = getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)

    from scitune.interop.hf_llava_next import hf_next_image_processor

    tok = tiny_vlm()[1].tokenizer
    side = tile // patch
    rule = ImageTokenRule(side * side, tile, parse_grids(grids))
    base = CLIPImageProcessorPil(size={"shortest_edge": tile}, crop_size={"height": tile, "width": tile})
    hf = LlavaNextProcessor(
        image_processor=hf_next_image_processor(base, rule),
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS, dropped by the default strategy
    )
    rng = random.Random(tile)
    sizes = SIZES + [(rng.randint(1, 3000), rng.randint(1, 3000)) for _ in range(200)]
    want = hf._get_num_multimodal_tokens(image_sizes=[(h, w) for w, h in sizes]).num_image_tokens
    assert [rule.count(s) for s in sizes] == want
    if tile == 32:  # and through the processor's own call: the number of <image> copies it writes
        for size in SIZES[:8]:
            ids = hf(images=_image(size), text="<image>", return_tensors="pt")["input_ids"]
            assert int((ids == tok.convert_tokens_to_ids("<image>")).sum()) == rule.count(size), size


def test_embed_packs_as_llava_next_model():
    m, proc = tiny_vlm(anyres=GRIDS)
    hf = to_hf_llava_next(m)
    images = [_image(s) for s in SIZES[:8]]
    text = " ".join("<image>" for _ in images)
    item = proc([Message("user", text)], images)
    ids, pix, grids = item["input_ids"][None], item["pixel_values"], item["image_grids"]
    with torch.no_grad():
        embeds = m.embed(ids, pix, image_grids=grids)
        feats = m.encode_images(pix)  # (n_tiles, 16, D), every image's overview and tiles
        per_image = torch.split(feats, (grids[:, 0] * grids[:, 1] + 1).tolist())
        packed, lens = hf.model.pack_image_features(list(per_image), grids[:, 2:], "default", hf.model.image_newline)
    assert lens.tolist() == [proc.image_tokens(s) for s in SIZES[:8]]
    assert torch.equal(embeds[ids == m.image_token_id], torch.cat(packed))


@pytest.mark.parametrize("projector", ["linear", "mlp2x-gelu"])
def test_llava_next_export_parity_processor_and_round_trip(projector, tmp_path):
    from transformers import AutoProcessor, LlavaNextForConditionalGeneration, LlavaNextProcessor

    m, processor = tiny_vlm(projector=projector, anyres=GRIDS)
    torch.nn.init.normal_(m.image_newline)
    export_hf(m, processor, tmp_path / "hf")
    hf = LlavaNextForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    proc = AutoProcessor.from_pretrained(tmp_path / "hf")
    assert isinstance(proc, LlavaNextProcessor) and hf.config.image_grid_pinpoints == grid_pinpoints(m.anyres_grids, 32)
    hf.generation_config.stop_strings = None  # raw greedy parity: the export's stops are tested in tests/unit/interop
    worst = 0.0
    for size in [(32, 32), (64, 32), (100, 30), (37, 91), (50, 50)]:  # every grid, rows cut, columns cut
        image = _image(size)
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What type of figure?"}]}]
        inputs = proc(
            images=image, text=proc.apply_chat_template(msgs, add_generation_prompt=True), return_tensors="pt"
        )
        ours = processor([Message("user", "<image>\nWhat type of figure?")], [image])
        assert torch.equal(inputs["input_ids"][0], ours["input_ids"]), size
        n_tiles = ours["pixel_values"].shape[0]
        assert torch.equal(inputs["pixel_values"][0, :n_tiles], ours["pixel_values"]), size
        assert inputs["image_sizes"].tolist() == ours["image_grids"][:, 2:].tolist()
        args = (ours["input_ids"][None], torch.ones_like(ours["input_ids"])[None], ours["pixel_values"])
        with torch.no_grad():
            diff = (m(*args, image_grids=ours["image_grids"]).logits - hf(**inputs).logits).abs().max().item()
        worst = max(worst, diff)
        if size in ((100, 30), (37, 91)):  # greedy generation on a wide and a tall image (rows / columns cut)
            g_hf = hf.generate(**inputs, max_new_tokens=8, do_sample=False)[:, inputs["input_ids"].shape[1] :]
            g_us = m.generate(*args, image_grids=ours["image_grids"], max_new_tokens=8, do_sample=False)
            assert torch.equal(g_hf, g_us), size
    assert worst < 1e-5
    back, back_proc = import_hf(tmp_path / "hf")  # llava_next -> scitune (llava-next layout) -> export again
    assert back.anyres_grids == m.anyres_grids and back_proc.rule == processor.rule
    assert type(back.projector) is type(m.projector) and torch.equal(back.image_newline, m.image_newline)
    image = _image((100, 30))
    assert torch.equal(back_proc.images([image])["pixel_values"], processor.images([image])["pixel_values"])
    export_hf(back, back_proc, tmp_path / "hf2")
    again = LlavaNextForConditionalGeneration.from_pretrained(tmp_path / "hf2")
    a, b = hf.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_llava_next_export_refusals():
    from scitune.interop.hf_llava_next import hf_llava_next_config

    with pytest.raises(ValueError, match="AnyRes models"):
        hf_llava_next_config(tiny_vlm().model)
    with pytest.raises(ValueError, match="square"):
        tiny_vlm(anyres=GRIDS, select="cls_patch")  # 17 tokens a tile: no square map to stitch
    m, processor = tiny_vlm(anyres=GRIDS, start_end=True)
    with pytest.raises(ValueError, match="im_start"):
        export_hf(m, processor, "unused")
