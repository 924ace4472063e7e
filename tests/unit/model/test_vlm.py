"""VisionLanguageModel: splicing, freezing per stage, KV-cache generation, parity with HF Llava, checkpoints."""

from __future__ import annotations

import pytest
import torch

from scitune.config.schema import LoraConfig
from scitune.infer.generate import GenerationConfig, Generator, Prompt
from scitune.interop.hf_llava import to_hf_llava
from scitune.loader import load, save_checkpoint, tiny_vlm
from scitune.train.stages import prepare_stage


def _batch(model, n_images=2, text_ids=(5, 6, 7, 8), bos=0):
    n = model.num_image_tokens
    row = [bos] + [model.image_token_id] * n + list(text_ids)
    ids = torch.tensor([row] * n_images)
    torch.manual_seed(0)
    return ids, torch.randn(n_images, 3, 32, 32)


def test_image_tokens_match_encoder():
    m, proc = tiny_vlm()
    assert m.num_image_tokens == 16 == proc.image_tokens()  # (32 / 8)^2 patches, CLS dropped
    assert (
        tiny_vlm(select="cls_patch").model.num_image_tokens
        == 17
        == tiny_vlm(select="cls_patch").processor.image_tokens()
    )


def test_mismatched_image_count_raises():
    m, proc = tiny_vlm()
    ids, pix = _batch(m)
    with pytest.raises(ValueError, match="image-token positions"):
        m(ids, pixel_values=pix[:1])


def test_text_only_and_image_rows_in_one_batch():
    m, proc = tiny_vlm()
    ids, pix = _batch(m, 1)
    text_row = torch.tensor([[0] + [9] * (ids.shape[1] - 1)])
    out = m(torch.cat([ids, text_row]), pixel_values=pix)
    alone = m(text_row)
    assert torch.allclose(out.logits[1], alone.logits[0], atol=1e-6)


def test_two_images_in_one_sample():
    m, proc = tiny_vlm()
    n = m.num_image_tokens
    ids = torch.tensor([[1] + [m.image_token_id] * n + [5] + [m.image_token_id] * n + [6]])
    pix = torch.randn(2, 3, 32, 32)
    a = m(ids, pixel_values=pix).logits
    b = m(ids, pixel_values=pix.flip(0)).logits
    assert not torch.allclose(a, b)  # image order matters: each image lands in its own slot


@pytest.mark.parametrize("stage", ["align", "finetune"])
def test_freezing_per_stage(stage):
    m, proc = tiny_vlm()
    counts = prepare_stage(m, stage, LoraConfig())
    ids, pix = _batch(m)
    m(ids, pixel_values=pix).logits.sum().backward()
    has_grad = {name for name, p in m.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    parts = {name.split(".")[0] for name in has_grad}
    assert parts == ({"projector"} if stage == "align" else {"projector", "llm"})
    assert counts["vision"]["trainable"] == 0
    assert counts["projector"]["trainable"] == counts["projector"]["total"] > 0
    assert (counts["llm"]["trainable"] == 0) == (stage == "align")


def test_lora_finetune_trains_only_adapters_and_projector():
    m, proc = tiny_vlm()
    counts = prepare_stage(m, "finetune", LoraConfig(r=4, alpha=8, dropout=0.0))
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("projector.") or "lora_" in n for n in trainable)
    assert 0 < counts["llm"]["trainable"] < counts["llm"]["total"]


def test_logit_parity_with_hf_llava():
    m, _ = tiny_vlm(projector="mlp2x-gelu")
    hf = to_hf_llava(m)
    ids, pix = _batch(m)
    mask = torch.ones_like(ids)
    ours = m(ids, mask, pix).logits
    theirs = hf(input_ids=ids, attention_mask=mask, pixel_values=pix).logits
    assert (ours - theirs).abs().max().item() < 1e-5


def test_kv_cache_generation_equals_no_cache():
    m, proc = tiny_vlm()
    from PIL import Image

    imgs = [Image.new("RGB", (32, 32), c) for c in ("red", "blue", "green")]
    prompts = [Prompt.single("What is shown?", [im]) for im in imgs]
    prompts.append(Prompt.single("A longer text-only prompt without any image at all"))
    g = Generator(m, proc)
    cfg = GenerationConfig(max_new_tokens=12)
    assert g.generate(prompts, cfg, use_cache=True) == g.generate(prompts, cfg, use_cache=False)
    # batched (left padding) == one by one
    assert g.generate(prompts, cfg) == [g.generate([p], cfg)[0] for p in prompts]


def test_checkpoint_roundtrip_rebuilds_same_model(tmp_path):
    m, proc = tiny_vlm()
    save_checkpoint(m, proc, tmp_path / "ck")
    assert not list(tmp_path.glob(".scitune-tmp-*"))
    m2, proc2 = load(tmp_path / "ck")
    ids, pix = _batch(m)
    assert torch.equal(m(ids, pixel_values=pix).logits, m2(ids, pixel_values=pix).logits)
    assert proc2.config() == proc.config() and m2.num_image_tokens == m.num_image_tokens
    assert proc2.tokenizer.get_vocab() == proc.tokenizer.get_vocab()
