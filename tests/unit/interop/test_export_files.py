"""The files of `scitune export hf`: the llava-hf weight layout, the exact ReLU form of a linear connector read as
vLLM's LLaVA loader reads it and back by `import hf`, the config fields of both transformers lines, the stops, the
model card, and `import hf`'s template (recorded, inferred, or refused)."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
import yaml
from exportkit import wide_vlm, write_trained_checkpoint
from safetensors.torch import load_file

from scitune.interop import connector, hf_files
from scitune.interop.hf_llava import EXPORT_FILE, export_hf, import_hf
from scitune.interop.vllm_compat import VLLM_ACTIVATIONS, vllm_llava_problems, weight_shapes
from scitune.loader import tiny_vlm


def _files(folder) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out |= load_file(str(f))
    return out


def test_weights_use_the_llava_hf_layout_both_lines_load(tmp_path):
    m, p = tiny_vlm(anyres=["1x1", "1x2"])
    export_hf(m, p, tmp_path / "hf")
    keys = _files(tmp_path / "hf").keys()
    prefixes = (
        "vision_tower.vision_model.",
        "multi_modal_projector.",
        "language_model.model.",
        "language_model.lm_head.",
    )
    assert all(k.startswith(prefixes) or k == "image_newline" for k in keys) and "image_newline" in keys
    vision = {
        k.removeprefix("vision_tower.vision_model."): v for k, v in _files(tmp_path / "hf").items() if "vision" in k
    }
    # CLIPVisionModel's own keys: "vision_model.embeddings..." on transformers 4.x, "embeddings..." on 5.x
    own = {k.removeprefix("vision_model."): v for k, v in m.vision.model.state_dict().items()}
    assert vision.keys() == own.keys()
    assert all(torch.equal(v, own[k]) for k, v in vision.items())


def test_linear_connector_is_an_exact_relu_mlp_that_vllm_reads(tmp_path):
    """LM 64 wide, encoder 32: linear_1 = [I; -I] (64 x 32), ReLU, linear_2 = [W, -W] (64 x 64), read as vLLM does."""
    m, p = wide_vlm()
    export_hf(m, p, tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["projector_hidden_act"] == "relu" and cfg["projector_hidden_act"].lower() in VLLM_ACTIVATIONS
    assert cfg["architectures"] == ["LlavaForConditionalGeneration"]
    assert cfg["text_config"]["architectures"] == ["LlamaForCausalLM"]
    shapes = weight_shapes(tmp_path / "hf")  # what vLLM's LlavaMultiModalProjector builds from the config:
    d_text, d_vision = cfg["text_config"]["hidden_size"], cfg["vision_config"]["hidden_size"]
    assert shapes["multi_modal_projector.linear_1.weight"] == (d_text, d_vision) == (64, 32)
    assert shapes["multi_modal_projector.linear_2.weight"] == (d_text, d_text)
    assert cfg["image_seq_length"] == (32 // 8) ** 2 == m.num_image_tokens  # CLIP's patches, CLS dropped ("default")
    assert cfg["image_token_index"] == p.image_token_id < cfg["text_config"]["vocab_size"]
    assert vllm_llava_problems(tmp_path / "hf") == []
    # vLLM's projector forward (linear_1, act, linear_2) on the file's tensors is scitune's linear map
    w = {k.removeprefix("multi_modal_projector."): v for k, v in _files(tmp_path / "hf").items() if "projector" in k}
    x = torch.randn(5, 16, 32)
    vllm_like = (
        torch.relu(x @ w["linear_1.weight"].T + w["linear_1.bias"]) @ w["linear_2.weight"].T + w["linear_2.bias"]
    )
    with torch.no_grad():
        assert (vllm_like - m.projector(x)).abs().max().item() < 1e-6
    # and back: import hf finds the linear map in it, bit for bit
    back, _ = import_hf(tmp_path / "hf")
    assert type(back.projector) is type(m.projector)
    assert torch.equal(back.projector.linear.weight, m.projector.linear.weight)
    assert torch.equal(back.projector.linear.bias, m.projector.linear.bias)


def test_a_narrow_lm_falls_back_to_the_linear_form_with_a_warning(tmp_path, caplog):
    m, p = tiny_vlm(projector="linear")  # LM 32 wide, encoder 32: no room for x and -x
    with caplog.at_level(logging.WARNING, logger="scitune.interop.hf_llava"):
        export_hf(m, p, tmp_path / "hf")
    assert "vLLM does not" in caplog.text
    assert json.loads((tmp_path / "hf" / EXPORT_FILE).read_text())["connector"]["form"] == connector.IDENTITY
    problems = vllm_llava_problems(tmp_path / "hf")
    assert len(problems) == 1 and "'linear' is not an activation vLLM knows" in problems[0]
    assert "vLLM's LLaVA loader would not load this folder" in (tmp_path / "hf" / "README.md").read_text()
    back, _ = import_hf(tmp_path / "hf")
    assert torch.equal(back.projector.linear.weight, m.projector.linear.weight)


def test_the_vllm_check_reads_what_vllm_reads(tmp_path):
    m, p = tiny_vlm()  # mlp2x-gelu
    export_hf(m, p, tmp_path / "hf")
    assert vllm_llava_problems(tmp_path / "hf") == []
    cfg_file = tmp_path / "hf" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg_file.write_text(json.dumps({**cfg, "projector_hidden_act": "identity", "image_seq_length": 17}))
    problems = "\n".join(vllm_llava_problems(tmp_path / "hf"))
    assert "'identity' is not an activation" in problems and "image_seq_length 17" in problems
    cfg_file.write_text(json.dumps({**cfg, "text_config": {**cfg["text_config"], "hidden_size": 48}}))
    assert "linear_2.weight has shape (32, 32); vLLM builds (48, 48)" in "\n".join(vllm_llava_problems(tmp_path / "hf"))


def test_config_carries_the_fields_transformers_4_reads():
    cfg = {
        "model_type": "llava",
        "dtype": "bfloat16",
        "text_config": {"model_type": "llama", "rope_parameters": {"rope_type": "llama3", "factor": 8.0,
                                                                    "rope_theta": 500000.0}},
        "vision_config": {"model_type": "clip_vision_model"},
    }  # fmt: skip
    old = hf_files.old_line_config(cfg)
    assert old["torch_dtype"] == "bfloat16" and old["text_config"]["rope_theta"] == 500000.0
    assert old["text_config"]["rope_scaling"] == {"rope_type": "llama3", "factor": 8.0}
    assert old["text_config"]["rope_parameters"] == cfg["text_config"]["rope_parameters"]  # 5.x's field stays
    plain = hf_files.old_line_config(
        {"model_type": "llama", "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}}
    )
    assert plain["rope_theta"] == 1e4 and "rope_scaling" not in plain


@pytest.mark.parametrize(
    "template,stop_strings", [("scitune", ["###"]), ("vicuna-v1", []), ("plain", []), ("llava-v0", ["###"])]
)
def test_generation_config_stops_where_scitune_stops(template, stop_strings):
    _, p = tiny_vlm(template=template)
    tok = p.tokenizer
    eos, strings = hf_files.stop_settings(p)
    assert strings == stop_strings and eos[0] == tok.eos_token_id
    own = [s for s in p.stop_strings() if s != tok.eos_token]
    for i in range(len(tok)):  # every token holding the stop string ends generation, and only those (and EOS)
        assert (i in eos) == (i == tok.eos_token_id or any(s in tok.decode([i]) for s in own)), i


def test_weights_over_the_shard_size_are_sharded_and_load(tmp_path, monkeypatch):
    from transformers import LlavaForConditionalGeneration

    monkeypatch.setattr(hf_files, "MAX_SHARD_SIZE", "100KB")
    m, p = tiny_vlm()
    export_hf(m, p, tmp_path / "hf")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file() and len(
        list((tmp_path / "hf").glob("*.safetensors"))
    ) > 1
    hf, info = LlavaForConditionalGeneration.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_model_card_names_data_template_usage_and_scores(tmp_path):
    from scitune.cli import main as cli

    m, p = wide_vlm()
    (tmp_path / "train.jsonl").write_text('{"id": "a"}\n')
    write_trained_checkpoint(m, p, tmp_path / "ckpt", tmp_path / "train.jsonl")
    assert cli(["export", "hf", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf")]) == 0
    card = (tmp_path / "hf" / "README.md").read_text()
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-text-to-text"
    assert meta["base_model"] == ["openai/clip-vit-large-patch14", "lmsys/vicuna-7b-v1.5"] and "scitune" in meta["tags"]
    from scitune.outputs import sha256_file

    assert "`train.jsonl`" in body and sha256_file(tmp_path / "train.jsonl") in body and "stage: `finetune`" in body
    assert "Chat template `scitune`" in body and "###Human: <image>\nWhat type of figure is this?###Assistant:" in body
    assert "tokenizer=processor.tokenizer" in body and "apply_chat_template" in body
    assert "| scifig-mcq | accuracy | 0.625 | 8 |" in body
    assert "pass the checks of vLLM 0.34.0" in body and "stop=['###']" in body


def test_import_takes_the_template_from_the_folder_and_refuses_unknown_ones(tmp_path, capsys):
    from scitune.cli import main as cli

    m, p = tiny_vlm(template="llava-v0")
    export_hf(m, p, tmp_path / "hf")
    assert import_hf(tmp_path / "hf").processor.template_name == "llava-v0"  # recorded in scitune_export.json
    assert import_hf(tmp_path / "hf", "vicuna-v1").processor.template_name == "vicuna-v1"  # asked for
    (tmp_path / "hf" / EXPORT_FILE).unlink()  # a llava-hf folder from elsewhere: inferred from its chat template
    assert import_hf(tmp_path / "hf").processor.template_name == "llava-v0"
    with pytest.raises(ValueError, match=r"unknown chat template 'nope'; known: .*llava-v0.*scitune"):
        import_hf(tmp_path / "hf", "nope")
    foreign = (
        "{% for m in messages %}{{ m['role'].upper() + ': ' }}{% endfor %}{% if add_generation_prompt %}A:{% endif %}"
    )
    shutil.copytree(tmp_path / "hf", tmp_path / "foreign")
    for name in ("chat_template.jinja", "chat_template.json", "tokenizer_config.json"):
        path = tmp_path / "foreign" / name
        text = json.loads(path.read_text()) if name.endswith(".json") else None
        if text is None:
            path.write_text(foreign)
        else:
            path.write_text(json.dumps({**text, "chat_template": foreign}))
    with pytest.raises(ValueError, match="renders as none of scitune's; pass --template"):
        import_hf(tmp_path / "foreign")
    rc = cli(["import", "hf", str(tmp_path / "foreign"), "--out", str(tmp_path / "ckpt"), "--template", "nope"])
    assert rc != 0 and "unknown chat template 'nope'" in capsys.readouterr().err
    assert cli(["import", "hf", str(tmp_path / "foreign"), "--out", str(tmp_path / "ckpt"), "--template", "plain"]) == 0
