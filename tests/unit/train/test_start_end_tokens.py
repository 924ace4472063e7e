"""LLaVA's ``mm_use_im_start_end``: <im_start>/<im_end> around each image's tokens, their new embedding rows start at
the mean of the others, and in a connector-only stage exactly those rows train (everything else stays bit-identical),
through the optimizer, the checkpoint and a reload."""

from __future__ import annotations

import torch
from PIL import Image

from scitune.config.schema import LoraConfig, OptimConfig
from scitune.data.conversation import Message
from scitune.loader import load, tiny_vlm
from scitune.processor import IM_END, IM_START
from scitune.train.optim import build_optimizer
from scitune.train.stages import prepare_stage


def _new_ids(processor):
    return processor.tokenizer.convert_tokens_to_ids([IM_START, IM_END])


def test_image_tokens_are_wrapped_and_new_rows_start_at_the_mean():
    model, processor = tiny_vlm(start_end=True)
    start, end = _new_ids(processor)
    item = processor([Message("user", "<image>\nWhat is shown?")], [Image.new("RGB", (32, 32), "red")])
    ids = item["input_ids"].tolist()
    n = model.num_image_tokens
    i = ids.index(start)
    assert ids[i : i + n + 2] == [start] + [model.image_token_id] * n + [end]
    assert processor.image_tokens() == n + 2
    base = model.identity["llm"]["base_vocab"]
    emb = model.llm.get_input_embeddings().weight
    assert start >= base and end >= base  # new rows, past the base vocabulary
    mean = emb[:base].mean(0)
    assert torch.allclose(emb[start], mean) and torch.allclose(emb[end], mean)
    out = model.llm.get_output_embeddings().weight
    assert torch.allclose(out[start], out[:base].mean(0))


def test_connector_stage_trains_exactly_the_new_rows(color_data):
    model, processor = tiny_vlm(start_end=True)
    prepare_stage(model, "align", LoraConfig())
    emb = model.llm.get_input_embeddings().weight
    before = emb.detach().clone()
    frozen = {k: v.detach().clone() for k, v in model.llm.named_parameters() if "embed_tokens" not in k}
    opt = build_optimizer(model, OptimConfig(lr=0.1, weight_decay=0.1, warmup_ratio=0.0))
    start, end = _new_ids(processor)
    item = processor([Message("user", "<image>\nWhat color?"), Message("assistant", "Red.")],
                     [Image.new("RGB", (32, 32), "red")], prompt=False)  # fmt: skip
    for _ in range(3):
        logits = model(item["input_ids"][None], pixel_values=item["pixel_values"]).logits
        logits.float().pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    changed = (emb.detach() != before).any(-1).nonzero().flatten().tolist()
    assert changed == sorted([start, end])  # the two new rows moved, and nothing else did (decay included)
    assert all(torch.equal(v, frozen[k]) for k, v in model.llm.named_parameters() if k in frozen)
    assert not model.llm.get_output_embeddings().weight.requires_grad


def test_trained_rows_survive_the_checkpoint(tmp_path, tiny_base, color_data, fresh_accelerate_state):
    from conftest import tiny_run_config
    from scitune.train.loop import Trainer

    cfg = tiny_run_config(tiny_base, color_data, tmp_path / "run", max_steps=2)
    cfg.model.use_im_start_end = True
    trainer = Trainer(cfg)
    result = trainer.run()
    trained = trainer.acc.unwrap_model(trainer.model)
    model, processor = load(result.final_checkpoint)
    assert processor.rule.start_end and processor.image_tokens() == model.num_image_tokens + 2
    a = trained.llm.get_input_embeddings().weight.detach()
    b = model.llm.get_input_embeddings().weight
    start, end = _new_ids(processor)
    assert torch.equal(a, b)  # the base rows (from the base LLM) and the trained new rows (from the checkpoint)
    base = model.identity["llm"]["base_vocab"]
    assert not torch.allclose(b[start], b[:base].mean(0))  # they did train
