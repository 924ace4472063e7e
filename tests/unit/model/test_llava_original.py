"""Original LLaVA-layout checkpoints (LLaVA-v0 with <im_patch> and start/end tokens, LLaVA-1.5 with mlp2x_gelu),
written here in that layout, import with the same logits as scitune's own model of the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from scitune.data.conversation import Message
from scitune.loader import load, source_kind
from scitune.model.builders import tiny_llm, tiny_tokenizer
from scitune.model.projector import build_projector
from scitune.model.vision import load_vision_encoder
from scitune.model.vlm import VisionLanguageModel


def _write_llava_folder(root: Path, base: dict, v0: bool) -> tuple[Path, VisionLanguageModel, dict]:
    """An original-LLaVA folder and scitune's own model built from the very same tensors."""
    tok = tiny_tokenizer()
    if v0:  # LLaVA-v0 adds <im_patch>, <im_start>, <im_end> to the tokenizer and resizes the embeddings
        tok.add_tokens(["<im_patch>", "<im_start>", "<im_end>"], special_tokens=True)
    llm = tiny_llm(len(tok), seed=3, bos=tok.bos_token_id, eos=tok.eos_token_id)
    vision, _ = load_vision_encoder("clip", base["vision"], -2, "patch")
    kind = "linear" if v0 else "mlp2x_gelu"
    torch.manual_seed(4)
    projector = build_projector("linear" if v0 else "mlp2x-gelu", vision.hidden_size, 32)
    proj = {f"model.mm_projector.{k}": v for k, v in projector.state_dict().items()}
    if not v0:  # LLaVA's mlp2x_gelu is nn.Sequential(Linear, GELU, Linear): indices 0 and 2
        proj = {k.replace("linear_1", "0").replace("linear_2", "2"): v for k, v in proj.items()}
    else:
        proj = {k.replace("linear.", ""): v for k, v in proj.items()}
    folder = root / ("llava-v0" if v0 else "llava-v1.5")
    folder.mkdir()
    cfg = {
        **llm.config.to_dict(),
        "model_type": "llava" if v0 else "llava_llama",
        "architectures": ["LlavaLlamaForCausalLM"],
        "mm_vision_tower": base["vision"],
        "mm_hidden_size": vision.hidden_size,
        "mm_projector_type": kind,
        "mm_use_im_start_end": v0,
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
    }
    (folder / "config.json").write_text(json.dumps(cfg))
    tok.save_pretrained(folder)
    weights = {**llm.state_dict(), **proj}
    if v0:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / "model.safetensors"))
    else:
        torch.save(weights, folder / "pytorch_model.bin")  # plain tensors: read back with weights_only=True
    image_id = tok.convert_tokens_to_ids("<im_patch>" if v0 else "<image>")
    ours = VisionLanguageModel(vision, projector, llm, image_id).eval()
    return folder, ours, {"tok": tok, "image_id": image_id}


@pytest.mark.parametrize("v0", [True, False], ids=["llava-v0-start-end-safetensors", "llava-1.5-mlp-bin"])
def test_original_layout_imports_with_the_same_logits(v0, tmp_path, tiny_base):
    folder, ours, info = _write_llava_folder(tmp_path, tiny_base, v0)
    assert source_kind(folder) == "llava-original"
    model, processor = load(folder)
    assert processor.image_token == ("<im_patch>" if v0 else "<image>") and processor.rule.start_end is v0
    assert processor.template_name == ("llava-v0" if v0 else "vicuna-v1")
    image = Image.new("RGB", (40, 30), "red")
    item = processor([Message("user", processor.image_token + "\nWhat is shown?")], [image])
    ids = item["input_ids"][None]
    n = model.num_image_tokens
    if v0:  # <im_start> + 16 x <im_patch> + <im_end>, as the SciTune authors' code builds it
        tok = processor.tokenizer
        run = (
            tok.convert_tokens_to_ids(["<im_start>"]) + [info["image_id"]] * n + tok.convert_tokens_to_ids(["<im_end>"])
        )
        flat = ids[0].tolist()
        start = flat.index(run[0])
        assert flat[start : start + n + 2] == run
    assert int((ids == model.image_token_id).sum()) == n
    with torch.no_grad():
        theirs = model(ids, pixel_values=item["pixel_values"]).logits
        mine = ours(ids, pixel_values=item["pixel_values"]).logits
    assert torch.equal(theirs, mine)


def test_import_command_writes_a_checkpoint_that_loads_the_same(tmp_path, tiny_base, capsys):
    from scitune.cli import main

    folder, _, _ = _write_llava_folder(tmp_path, tiny_base, v0=True)
    assert main(["import", "llava", str(folder), "--out", str(tmp_path / "ck")]) == 0
    a, pa = load(folder)
    b, pb = load(tmp_path / "ck")
    assert pa.config() == pb.config()
    item = pa([Message("user", pa.image_token + "\nHi")], [Image.new("RGB", (32, 32), "blue")])
    with torch.no_grad():
        assert torch.equal(
            a(item["input_ids"][None], pixel_values=item["pixel_values"]).logits,
            b(item["input_ids"][None], pixel_values=item["pixel_values"]).logits,
        )


def test_a_pickle_that_is_not_plain_tensors_is_refused(tmp_path, tiny_base):
    from scitune.interop.llava_original import read_state_dict
    from scitune.io import DataError

    folder = tmp_path / "evil"
    folder.mkdir()
    torch.save({"x": torch.zeros(1), "code": Path}, folder / "pytorch_model.bin")  # a class reference: not allowed
    with pytest.raises(DataError, match="weights_only"):
        read_state_dict(folder)
