"""Helpers of the export tests: a tiny VLM whose LM is wider than its encoder (the exact ReLU form of a linear
connector fits), steering a tiny model's greedy reply into a stop string, a trained-looking checkpoint (run config,
manifest fingerprint, eval results), and what scitune itself renders, encodes and generates for a probe question."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from scitune.interop.chat_template import _scitune_text
from scitune.loader import Loaded

QUESTION = "What type of figure?"
CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]},
    {"role": "assistant", "content": "A bar chart."},
    {"role": "user", "content": "And the axes?\nSay it."},
    {"role": "assistant", "content": "Years and counts."},
]
"""A training conversation (system, image, two turns): its rendering is scitune's training text."""


def probe_image(size: tuple[int, int] = (40, 30)) -> Image.Image:
    """A picture with structure everywhere, so that a wrong pixel shows in the logits."""
    return Image.radial_gradient("L").convert("RGB").resize(size).rotate(17, fillcolor=(200, 40, 90))


def wide_vlm(
    template: str = "scitune", projector: str = "linear", hidden: int = 64, rope: dict | None = None, seed: int = 0
) -> Loaded:
    """A tiny VLM with a LLaMA of width ``hidden`` (the tiny CLIP gives 32 features) and ``rope`` parameters."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from scitune.model.builders import assemble, tiny_tokenizer, tiny_vision
    from scitune.model.vision import VisionEncoder
    from scitune.processor import ImageTokenRule, Processor

    tok = tiny_tokenizer()
    vision_model, image_processor = tiny_vision(seed)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=3,
        tie_word_embeddings=False,
        **({"rope_parameters": rope} if rope else {}),
    )
    llm = LlamaForCausalLM(cfg).eval()
    vision = VisionEncoder(vision_model, -2, "patch", has_cls=True)
    processor = Processor(tok, image_processor, template, ImageTokenRule(vision.num_tokens, vision.image_size))
    identity = {
        "vision": {"name": "clip", "path": "openai/clip-vit-large-patch14", "feature_layer": -2, "select": "patch"},
        "llm": {"path": "lmsys/vicuna-7b-v1.5", "dtype": "float32", "attn": None},
    }
    torch.manual_seed(seed + 1)
    model = assemble(vision, llm, projector, identity, processor.image_token_id, len(processor.tokenizer))
    return Loaded(model.eval(), processor)


@torch.no_grad()
def _last_hidden(model, ids: list[int], pixel_values: torch.Tensor, image_grids=None) -> tuple[torch.Tensor, Any]:
    seen = {}
    head = model.llm.get_output_embeddings()
    hook = head.register_forward_pre_hook(lambda _m, args: seen.__setitem__("h", args[0][0, -1].clone()))
    try:
        x = torch.tensor([ids])
        logits = model(x, torch.ones_like(x), pixel_values, image_grids=image_grids).logits[0, -1]
    finally:
        hook.remove()
    return seen["h"], logits


@torch.no_grad()
def steer(model, processor, image: Image.Image, targets: list[str], margin: float = 0.5) -> list[int]:
    """Make the greedy reply to (``image``, `QUESTION`) emit the tokens ``targets`` after a few tokens of its own, by
    moving those tokens' output-embedding rows towards the hidden state at their step; returns the planned ids.

    Tries later starting steps until the model's own greedy decoding reproduces the plan (a moved row can also win
    an earlier step); raises RuntimeError when none does.
    """
    item = processor([_user(processor)], [image], prompt=True)
    ids, pix, grids = item["input_ids"].tolist(), item["pixel_values"], item.get("image_grids")
    target_ids = [processor.tokenizer.convert_tokens_to_ids(t) for t in targets]
    head = model.llm.get_output_embeddings().weight
    original = head.clone()
    for start in range(2, 9):
        head.copy_(original)
        plan: list[int] = []
        for step in range(start + len(targets)):
            h, logits = _last_hidden(model, ids + plan, pix, grids)
            if step < start:
                plan.append(int(logits.argmax()))
                continue
            t = target_ids[step - start]
            head[t] += h * (float(logits.max() - logits[t]) + margin) / float(h @ h)
            plan.append(t)
        got = model.generate(
            torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), pix, image_grids=grids,
            max_new_tokens=len(plan), do_sample=False,
        )[0].tolist()  # fmt: skip
        if got == plan:
            return plan
    head.copy_(original)
    raise RuntimeError(f"could not steer the tiny model into {targets}")


def _user(processor):
    from scitune.data.conversation import Message

    return Message("user", f"{processor.image_token}\n{QUESTION}")


def write_trained_checkpoint(model, processor, path: Path, data_file: Path) -> Path:
    """A checkpoint as `scitune train` leaves it: the model, its run config (`RUN_CONFIG_FILE`) and the data's
    fingerprint in the manifest, then an eval result in ``eval/`` (`scitune eval`'s default output)."""
    from scitune.fingerprint import fingerprint_data_file
    from scitune.loader import save_files
    from scitune.model.checkpoint import RUN_CONFIG_FILE, write_checkpoint

    run = {
        "model": {"init_from": None},
        "data": {"train": str(data_file), "template": processor.template_name},
        "optim": {},
        "train": {"stage": "finetune"},
    }
    fp = fingerprint_data_file(data_file)

    def writer(d: Path) -> None:
        save_files(model, processor, d, llm_changed=True, vision_changed=True)
        (d / RUN_CONFIG_FILE).write_text(json.dumps(run))

    extra = {"fingerprint": {"data": {"train": {"size": fp["size"], "sha256": fp["sha256"]}}}}
    write_checkpoint(path, writer, extra=extra)
    results = {"benchmark": "scifig-mcq", "summary": {"accuracy": 0.625, "n": 8}, "input": {"examples": 8}}
    (path / "eval" / "scifig-mcq").mkdir(parents=True)
    (path / "eval" / "scifig-mcq" / "results.json").write_text(json.dumps(results))
    return path


def scitune_expectations(model, processor, image: Image.Image, max_new_tokens: int) -> dict[str, Any]:
    """scitune's own training text, prompt text, input ids, pixels, logits and greedy tokens (`GenerationEngine`,
    what `scitune generate` runs) for the probe question."""
    from scitune.config.schema import GenerationConfig
    from scitune.infer.engine import GenerationEngine
    from scitune.infer.generate import Generator, Prompt

    gen = Generator(model, processor)
    (request,) = gen.requests([Prompt.single(QUESTION, [image])], GenerationConfig(max_new_tokens=max_new_tokens))
    item = processor([_user(processor)], [image], prompt=True)
    with torch.no_grad():
        x = item["input_ids"][None]
        logits = model(x, torch.ones_like(x), item["pixel_values"], image_grids=item.get("image_grids")).logits[0]
    (done,) = GenerationEngine(model, processor, max_batch_size=0, admission="static").run([request])
    return {
        "train_text": _scitune_text(processor, CONVERSATION, False),
        "prompt_text": _scitune_text(processor, CONVERSATION[:2], True),
        "input_ids": list(request.input_ids),
        "pixel_values": item["pixel_values"],
        "logits": logits,
        "tokens": list(done.token_ids),
        "finish": done.finish_reason,
        "text": done.text,
    }
