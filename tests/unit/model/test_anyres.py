"""AnyRes tiling: grid choice, token counts through tokenization / collation / splice / generation, checkpoints, in the
llava-next layout (the default) and the older tiles layout (test_llava_next.py: llava-next against transformers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import tiny_run_config
from scitune.config.schema import LlmConfig, LoraConfig, ModelConfig, VisionConfig
from scitune.data.collate import collate
from scitune.data.conversation import Message
from scitune.data.dataset import SupervisedDataset, validate_file
from scitune.infer.generate import GenerationConfig, Generator, Prompt
from scitune.interop.hf_llava import to_hf_llava
from scitune.interop.hf_llava_next import to_hf_llava_next
from scitune.loader import build, load, save_checkpoint, tiny_vlm
from scitune.model.anyres import image_token_count, parse_grids, select_grid, split_tiles
from scitune.model.vlm import VisionLanguageModel
from scitune.processor import ImageTokenRule, Processor
from scitune.train.stages import prepare_stage

GRIDS = ["1x1", "1x2", "2x1", "2x2"]
TILE_TOKENS = 16  # tiny CLIP: 32 px tiles, patch 8 -> 16 patch tokens
SIZES = {  # (width, height) -> the grid LLaVA-NeXT's rule picks among GRIDS with 32 px tiles (worked out by hand)
    (32, 32): (1, 1),  # fits 1x1 exactly; the others only add waste
    (64, 32): (1, 2),  # wide: 1x2 keeps all 2048 px with no waste (2x2 keeps 2048 but wastes 2048)
    (32, 64): (2, 1),
    (64, 64): (2, 2),
    (100, 30): (1, 2),  # 1x2 and 2x2 both keep 64x19 = 1216 px; 1x2 wastes 832, 2x2 wastes 2880
    (50, 50): (2, 2),  # 2x2 keeps all 2500 px (scaled up, capped at the original), 1x1/1x2/2x1 keep 1024
}
NEXT_TOKENS = {  # llava-next layout, by hand: overview 4x4 = 16, then the tiles' map (4 rows x 4 cols per tile) with
    # the padding rows/columns cut off and one newline per kept row
    (32, 32): 16 + 4 * (4 + 1),
    (64, 32): 16 + 4 * (8 + 1),  # 4x8 map, the image fills it
    (32, 64): 16 + 8 * (4 + 1),
    (64, 64): 16 + 8 * (8 + 1),
    (100, 30): 16 + 2 * (8 + 1),  # 4x8 map; the image covers 30*8//100 = 2 rows, 1 padding row cut above and below
    (50, 50): 16 + 8 * (8 + 1),
}


def tiles_vlm(seed: int = 0) -> tuple[VisionLanguageModel, Processor]:
    """The tiny AnyRes model and processor in the older ``tiles`` layout (as checkpoints before llava-next load)."""
    m, proc = tiny_vlm(seed, anyres=GRIDS)
    del m.projector.image_newline
    tiles = VisionLanguageModel(
        m.vision, m.projector, m.llm, m.image_token_id, m.identity, None, m.anyres_grids, "tiles"
    )
    rule = ImageTokenRule(TILE_TOKENS, 32, parse_grids(GRIDS), layout="tiles")
    return tiles, Processor(proc.tokenizer, proc.image_processor, proc.template_name, rule)


def _write_records(folder: Path, sizes, colors=("red", "blue", "green", "yellow")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, size in enumerate(sizes):
        color = colors[i % len(colors)]
        Image.new("RGB", size, color).save(folder / f"im{i}.png")
        conv = [{"from": "human", "value": "<image>\nWhat color?"}, {"from": "gpt", "value": f"It is {color}."}]
        lines.append({"id": f"s{i}", "image": f"im{i}.png", "conversations": conv})
    lines.append({"id": "text", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hi."}]})
    path = folder / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def test_grid_choice_hand_computed():
    grids = parse_grids(GRIDS)
    assert grids == ((1, 1), (1, 2), (2, 1), (2, 2))
    for size, want in SIZES.items():
        assert select_grid(size, grids, 32) == want, size
    # more resolution beats less waste: 128x128 keeps 9216 px on a 3x3 canvas but 1024 on 1x1
    assert select_grid((128, 128), ((1, 1), (3, 3)), 32) == (3, 3)
    # equal resolution (40x40 = 1600 px kept on both): the smaller canvas wastes less
    assert select_grid((40, 40), ((3, 3), (2, 2)), 32) == (2, 2)
    assert image_token_count((2, 3), 16) == (6 + 1) * 16


@pytest.mark.parametrize("bad", [["0x1"], ["2by2"], ["2x"], ["1x1", "1x1"]])
def test_bad_grids_name_the_flag(bad):
    with pytest.raises(ValueError, match="--model.vision.anyres"):
        parse_grids(bad)
    if bad != ["1x1", "1x1"]:
        with pytest.raises(ValueError, match="--model.vision.anyres"):
            VisionConfig(anyres=bad)


def test_tiles_are_the_overview_then_the_padded_canvas_row_by_row():
    im = Image.new("RGB", (64, 32), (0, 0, 0))
    im.paste((255, 0, 0), (32, 0, 64, 32))  # right half red
    tiles = split_tiles(im, (1, 2), 32, (1, 2, 3))
    assert [t.size for t in tiles] == [(32, 32)] * 3
    assert tiles[1].getpixel((16, 16)) == (0, 0, 0) and tiles[2].getpixel((16, 16)) == (255, 0, 0)
    tall = split_tiles(Image.new("RGB", (32, 16), (9, 9, 9)), (1, 1), 32, (1, 2, 3))  # padded top and bottom
    assert tall[1].getpixel((16, 1)) == (1, 2, 3) and tall[1].getpixel((16, 16)) == (9, 9, 9)


@pytest.mark.parametrize("layout", ["llava-next", "tiles"])
def test_token_counts_follow_the_grid_and_layout(tmp_path, layout):
    m, proc = tiny_vlm(anyres=GRIDS) if layout == "llava-next" else tiles_vlm()
    assert m.num_image_tokens == TILE_TOKENS and m.anyres_layout == proc.rule.layout == layout
    data = _write_records(tmp_path, list(SIZES))
    samples, report = validate_file(data, proc, max_length=256)
    assert report.ok, report.summary()
    ds = SupervisedDataset(samples, proc.images)
    for i, (size, (rows, cols)) in enumerate(SIZES.items()):
        item = ds[i]
        n_tokens = int((item["input_ids"] == m.image_token_id).sum())
        want = NEXT_TOKENS[size] if layout == "llava-next" else (rows * cols + 1) * TILE_TOKENS
        assert n_tokens == want == proc.image_tokens(size), size
        assert item["pixel_values"].shape == (rows * cols + 1, 3, 32, 32)
        assert item["image_grids"].tolist() == [[rows, cols, size[1], size[0]]]  # grid, then (height, width)
    batch = collate([ds[i] for i in range(len(ds))], proc.pad_token_id)
    assert batch["image_grids"].shape == (len(SIZES), 4)
    out = m(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], image_grids=batch["image_grids"])
    assert out.logits.shape[:2] == batch["input_ids"].shape


def test_without_anyres_nothing_changes(tmp_path):
    m, proc = tiny_vlm()
    assert "anyres" not in m.identity["vision"] and m.anyres_grids == ()
    assert proc.slots.for_images([(64, 32)]) is proc.slots
    out = proc.images([Image.new("RGB", (64, 32), "red")])
    assert "image_grids" not in out and out["pixel_values"].shape == (1, 3, 32, 32)
    assert proc.image_tokens((64, 32)) == 16 == proc.image_tokens()


@pytest.mark.parametrize("layout", ["llava-next", "tiles"])
def test_mixed_batch_forward_backward_and_splice_order(tmp_path, layout):
    m, proc = tiny_vlm(anyres=GRIDS) if layout == "llava-next" else tiles_vlm()
    data = _write_records(tmp_path, [(32, 32), (64, 64)])
    samples, report = validate_file(data, proc, max_length=256)
    assert report.ok and len(samples) == 3
    ds = SupervisedDataset(samples, proc.images)
    batch = collate([ds[0], ds[1], ds[2]], proc.pad_token_id)
    assert batch["pixel_values"].shape[0] == 2 + 5 and batch["image_grids"][:, :2].tolist() == [[1, 1], [2, 2]]
    embeds = m.embed(batch["input_ids"], batch["pixel_values"], image_grids=batch["image_grids"])
    feats = m.encode_images(batch["pixel_values"])  # (7, 16, D)
    if layout == "tiles":  # every tile's projected features land in its own run of image tokens, overview first
        want = feats.reshape(-1, embeds.shape[-1])
    else:  # overview, then the stitched 8x8 map of the 2x2 image row by row, each row closed by the newline
        d, nl = feats.shape[-1], m.image_newline
        small = torch.cat([feats[0], torch.cat([feats[1].reshape(4, 4, d), nl.expand(4, 1, d)], 1).reshape(-1, d)])
        stitched = feats[3:7].reshape(2, 2, 4, 4, d).permute(0, 2, 1, 3, 4).reshape(8, 8, d)
        big = torch.cat([feats[2], torch.cat([stitched, nl.expand(8, 1, d)], 1).reshape(-1, d)])
        want = torch.cat([small, big])
        assert stitched[0, 4].equal(feats[4, 0]) and stitched[4, 0].equal(feats[5, 0])  # tile (0,1) and (1,0) corners
    assert torch.allclose(embeds[batch["input_ids"] == m.image_token_id], want)
    prepare_stage(m, "finetune", LoraConfig())
    out = m(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], image_grids=batch["image_grids"])
    labels = batch["labels"]
    loss = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100
    )
    loss.backward()
    assert m.projector.linear_1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.vision.parameters())
    alone = m(ds[0]["input_ids"][None], pixel_values=ds[0]["pixel_values"], image_grids=ds[0]["image_grids"]).logits[0]
    assert torch.allclose(out.logits[0, : len(alone)], alone, atol=1e-5)  # right padding: the row is unchanged
    bad_grids = torch.tensor([[1, 1, 32, 32], [1, 2, 64, 64]])
    with pytest.raises(ValueError, match="need 5 tiles"):
        m.embed(batch["input_ids"], batch["pixel_values"], image_grids=bad_grids)
    if layout == "tiles":
        with pytest.raises(ValueError, match="tiles x 16 tokens"):
            m.embed(batch["input_ids"], batch["pixel_values"][:-1])
    else:
        with pytest.raises(ValueError, match="pass image_grids"):
            m.embed(batch["input_ids"], batch["pixel_values"])
        wrong_size = batch["image_grids"].clone()
        wrong_size[1, 2:] = torch.tensor([30, 100])  # 100x30 on the 2x2 map keeps 2 rows: 16 + 2 * 9 tokens
        with pytest.raises(ValueError, match="need \\[36, 34\\] tokens"):
            m.embed(batch["input_ids"], batch["pixel_values"], image_grids=wrong_size)


def test_generation_with_anyres_kv_cache_and_batching():
    m, proc = tiny_vlm(anyres=GRIDS)
    imgs = [Image.new("RGB", size, c) for size, c in zip(SIZES, ("red", "blue", "green", "white"))]
    prompts = [Prompt.single("What is shown?", [im]) for im in imgs]
    prompts.append(Prompt.single("Two images", imgs[:2]))
    prompts.append(Prompt.single("A text-only prompt"))
    g = Generator(m, proc)
    cfg = GenerationConfig(max_new_tokens=6)
    batched = g.generate(prompts, cfg)
    assert batched == g.generate(prompts, cfg, use_cache=False)
    assert batched == [g.generate([p], cfg)[0] for p in prompts]
    with pytest.raises(ValueError, match="placeholder #2 but only 1 image"):
        g.generate([Prompt.single("<image> and <image>", imgs[:1])], cfg)


def test_export_and_feature_cache_take_anyres(tiny_base):
    with pytest.raises(ValueError, match="to_hf_llava_next"):
        to_hf_llava(tiny_vlm(anyres=["1x1"]).model)
    with pytest.raises(ValueError, match="'tiles' layout"):
        to_hf_llava_next(tiles_vlm()[0])
    from scitune.processor import AnyResImageProcessor
    from scitune.train.feature_cache import build_vision_side, vision_feature_identity

    cfg = ModelConfig(vision=VisionConfig(name="clip", path=tiny_base["vision"], anyres=["1x1", "2x2"]))
    encoder, image_processor, identity = build_vision_side(cfg)
    assert isinstance(image_processor, AnyResImageProcessor) and image_processor.rule.grids == ((1, 1), (2, 2))
    m, proc = build(
        ModelConfig(
            vision=VisionConfig(name="clip", path=tiny_base["vision"], anyres=["1x1", "2x2"]),
            llm=LlmConfig(path=tiny_base["llm"]),
        )
    )
    built = vision_feature_identity(encoder, image_processor, identity)  # what the model's own processor gives
    assert built == vision_feature_identity(m.vision, proc.image_processor, m.identity["vision"])


def test_tiny_align_run_with_anyres_trains_and_reloads(tmp_path, tiny_base, fresh_accelerate_state):
    from scitune.train.loop import Trainer

    sizes = [(32, 32), (64, 32), (32, 64), (64, 64), (100, 30), (50, 50), (48, 40)]
    data = _write_records(tmp_path / "data", sizes)
    cfg = tiny_run_config(
        tiny_base, data, tmp_path / "run", vision={"anyres": GRIDS}, optim={"schedule": "constant"}, epochs=3
    )
    torch.manual_seed(cfg.train.seed)  # as the trainer builds its model: the newline it starts from
    newline = build(cfg.model, cfg.data.template).model.image_newline.detach()
    trainer = Trainer(cfg)
    result = trainer.run()
    assert result.steps == 6 and result.losses[-1] < result.losses[0]
    meta = json.loads((Path(result.final_checkpoint) / "scitune.json").read_text())
    assert meta["vision"]["anyres"] == GRIDS and meta["num_image_tokens"] == TILE_TOKENS
    assert meta["vision"]["anyres_layout"] == "llava-next"
    trained = trainer.acc.unwrap_model(trainer.model).eval()
    assert not torch.equal(trained.image_newline, newline)  # the newline trains in align, with the connector
    loaded, proc = load(result.final_checkpoint)
    assert loaded.anyres_grids == trained.anyres_grids and proc.image_tokens((64, 32)) == NEXT_TOKENS[(64, 32)]
    assert proc.config() == trainer.processor.config() and proc.config()["rule"]["layout"] == "llava-next"
    assert torch.equal(loaded.image_newline, trained.image_newline)
    samples, _ = validate_file(data, proc, max_length=256)
    ds = SupervisedDataset(samples, proc.images)
    batch = collate([ds[i] for i in range(len(ds))], proc.pad_token_id)
    args = (batch["input_ids"], batch["attention_mask"], batch["pixel_values"])
    with torch.no_grad():
        want = trained(*args, image_grids=batch["image_grids"]).logits
        assert torch.equal(want, loaded(*args, image_grids=batch["image_grids"]).logits)


@pytest.mark.parametrize("stage", ["align", "finetune", "full-finetune"])
def test_image_newline_trains_with_the_connector_in_every_stage(stage):
    m, proc = tiny_vlm(anyres=GRIDS)
    counts = prepare_stage(m, stage, LoraConfig())
    assert m.image_newline.requires_grad and counts["projector"]["trainable"] == counts["projector"]["total"]
    item = proc([Message("user", "<image>\nWhat?"), Message("assistant", "Red.")], [Image.new("RGB", (100, 30))], False)
    out = m(item["input_ids"][None], pixel_values=item["pixel_values"], image_grids=item["image_grids"])
    out.logits.sum().backward()
    assert m.image_newline.grad is not None and m.image_newline.grad.abs().sum() > 0


def test_llava_next_checkpoint_round_trip(tmp_path):
    m, proc = tiny_vlm(anyres=GRIDS)
    torch.nn.init.normal_(m.image_newline)
    ck = save_checkpoint(m, proc, tmp_path / "ck")
    assert json.loads((ck / "processor.json").read_text())["rule"]["layout"] == "llava-next"
    m2, proc2 = load(ck)
    assert m2.anyres_layout == "llava-next" and proc2.rule == proc.rule
    assert torch.equal(m2.image_newline, m.image_newline)
    item = proc([Message("user", "<image>\nWhat?")], [Image.new("RGB", (100, 30), "red")])
    args = (item["input_ids"][None], None, item["pixel_values"])
    with torch.no_grad():
        assert torch.equal(
            m.eval()(*args, image_grids=item["image_grids"]).logits, m2(*args, image_grids=item["image_grids"]).logits
        )


def test_tiles_checkpoints_from_before_llava_next_keep_loading(tmp_path):
    m, proc = tiles_vlm()
    ck = save_checkpoint(m, proc, tmp_path / "ck")
    for name, part in (("scitune.json", "vision"), ("processor.json", "rule")):  # as an older scitune wrote them
        d = json.loads((ck / name).read_text())
        del d[part]["anyres_layout" if part == "vision" else "layout"]
        (ck / name).write_text(json.dumps(d))
    (ck / "scitune-manifest.json").unlink()
    m2, proc2 = load(ck)
    assert m2.anyres_layout == proc2.rule.layout == "tiles" and m2.image_newline is None
    assert proc2.image_tokens((64, 32)) == 3 * TILE_TOKENS
    item = proc2([Message("user", "<image>\nWhat?")], [Image.new("RGB", (64, 32), "red")])
    args = (item["input_ids"][None], None, item["pixel_values"])
    with torch.no_grad():
        assert torch.equal(m.eval()(*args).logits, m2(*args, image_grids=item["image_grids"]).logits)


def test_served_request_gets_the_same_tokens_and_tiles_as_offline():
    import base64
    import io

    from scitune.serve.config import ServeConfig
    from scitune.serve.prepare import RequestPreparer
    from scitune.serve.schema import ChatCompletionRequest

    m, proc = tiny_vlm(anyres=GRIDS)
    buf = io.BytesIO()
    Image.new("RGB", (64, 32), "red").save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What?"}]
    req = ChatCompletionRequest.model_validate({"model": "tiny", "messages": [{"role": "user", "content": content}]})
    job = RequestPreparer(m, proc, ServeConfig(checkpoint="unused"), "tiny").prepare(req).job
    offline = Generator(m, proc)._batch([Prompt([Message("user", "<image>\nWhat?")], [Image.open(buf).convert("RGB")])])
    assert job.input_ids == offline["input_ids"][0].tolist()
    assert job.input_ids.count(m.image_token_id) == NEXT_TOKENS[(64, 32)]
    assert job.pixel_values.shape[0] == 3  # 1x2 grid + overview
