"""The files of an exported llava-hf folder, written so that transformers 4.45+ and 5.x both read them the same: the
weights in the original llava-hf key layout, a config with the older rope/dtype fields beside the new ones, tokenizer
files with a class both lines have, the chat template and image processor in every file either line reads, and a
generation config that stops where scitune stops."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from scitune.io import write_json
from scitune.processor import Processor

MAX_SHARD_SIZE = "5GB"
"""Largest weight file (a bigger model is sharded, with ``model.safetensors.index.json``)."""
OLD_TOKENIZER_CLASSES = {"TokenizersBackend": "PreTrainedTokenizerFast"}
"""transformers 5 class names that 4.x lacks -> the 4.x class that reads the same ``tokenizer.json``. Other names
(``LlamaTokenizer``, ``GPT2Tokenizer``, ...) exist in 4.x, whose AutoTokenizer picks their ``...Fast`` class."""


def llava_hf_state_dict(
    model: Any, llm: Any, projector: dict[str, torch.Tensor], image_newline: bool = False
) -> dict[str, torch.Tensor]:
    """The weights in the key layout of the llava-hf checkpoints on the hub, which transformers 4.45+ and 5.x both load
    without renaming leftovers: ``vision_tower.vision_model.*`` (transformers 5 strips ``vision_model`` from CLIP and
    SigLIP towers and would save ``vision_tower.*``, which 4.x does not load), ``multi_modal_projector.*``,
    ``language_model.model.*``, ``language_model.lm_head.*`` (and ``image_newline``).

    Args:
        model: the `VisionLanguageModel`.
        llm: its LLM with LoRA merged (a ``*ForCausalLM``).
        projector: the ``multi_modal_projector`` weights (`scitune.interop.connector.projector_state`).
        image_newline: add the AnyRes row-end embedding (LlavaNext).
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in model.vision.model.state_dict().items():
        out["vision_tower.vision_model." + k.removeprefix("vision_model.")] = v
    out |= {"multi_modal_projector." + k: v for k, v in projector.items()}
    out |= {"language_model.model." + k: v for k, v in llm.model.state_dict().items()}
    out |= {"language_model.lm_head." + k: v for k, v in llm.lm_head.state_dict().items()}
    if image_newline:
        out["image_newline"] = model.image_newline
    return out


def save_weights(state: dict[str, torch.Tensor], folder: Path) -> None:
    """``model.safetensors`` (or shards of `MAX_SHARD_SIZE` and their index), tensors that share memory (tied
    embeddings) written as copies."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    seen: set[int] = set()
    tensors = {}
    for k, v in state.items():
        v = v.detach().cpu().contiguous()
        if v.data_ptr() in seen:
            v = v.clone()
        seen.add(v.data_ptr())
        tensors[k] = v
    split = split_torch_state_dict_into_shards(tensors, max_shard_size=MAX_SHARD_SIZE)
    for file, names in split.filename_to_tensors.items():
        save_file({k: tensors[k] for k in names}, str(folder / file), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())}}
        write_json(folder / "model.safetensors.index.json", {**index, "weight_map": split.tensor_to_filename})


def old_line_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` (a config.json written by transformers 5) with the fields transformers 4.x reads added beside the new
    ones, in the top level and every sub-config: ``rope_theta``/``rope_scaling``/``partial_rotary_factor`` from
    ``rope_parameters`` (4.x ignores that key and would fall back to the default rope base), ``torch_dtype`` from
    ``dtype``. transformers 5 reads both spellings the same."""
    out = dict(cfg)
    for key, value in cfg.items():
        if isinstance(value, dict) and "model_type" in value:
            out[key] = old_line_config(value)
    rope = cfg.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" not in cfg:
        out["rope_theta"] = rope.get("rope_theta")
        if "partial_rotary_factor" in rope:
            out.setdefault("partial_rotary_factor", rope["partial_rotary_factor"])
        if rope.get("rope_type", "default") != "default" and "rope_scaling" not in cfg:
            out["rope_scaling"] = {k: v for k, v in rope.items() if k not in ("rope_theta", "partial_rotary_factor")}
    if cfg.get("dtype") is not None and "torch_dtype" not in cfg:
        out["torch_dtype"] = cfg["dtype"]
    return out


def write_config(hf_config: Any, folder: Path, dtype: str) -> None:
    """``config.json`` readable by both lines (`old_line_config`), the weights' ``dtype`` recorded."""
    hf_config.save_pretrained(folder)
    path = folder / "config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    write_json(path, old_line_config({**cfg, "dtype": dtype}))


def write_processor_files(hf_processor: Any, folder: Path) -> None:
    """The processor's files as transformers 5 writes them, made readable by 4.x too: ``tokenizer_config.json`` with
    a class 4.x has, ``additional_special_tokens`` (4.x reads ``extra_special_tokens`` as a dict of named tokens) and
    the tokenizer's ``model_input_names``,
    the chat template also in ``chat_template.json`` (the processors of 4.4x) and ``tokenizer_config.json`` (their
    tokenizers), and the image processor's own ``preprocessor_config.json`` (AutoImageProcessor)."""
    hf_processor.save_pretrained(folder)
    hf_processor.image_processor.save_pretrained(folder)
    # transformers 5 nests the image processor's settings in processor_config.json; 4.4x passes that entry to the
    # processor's constructor beside the image processor it loaded from preprocessor_config.json (and fails)
    path = folder / "processor_config.json"
    pc = json.loads(path.read_text(encoding="utf-8"))
    write_json(path, {k: v for k, v in pc.items() if not (isinstance(v, dict) and k.endswith("processor"))})
    jinja = hf_processor.chat_template
    path = folder / "tokenizer_config.json"
    tc = json.loads(path.read_text(encoding="utf-8"))
    cls = tc.get("tokenizer_class")
    tc["tokenizer_class"] = OLD_TOKENIZER_CLASSES.get(cls, cls)
    extra = tc.get("extra_special_tokens")
    if isinstance(extra, list):
        del tc["extra_special_tokens"]
        tc["additional_special_tokens"] = list(dict.fromkeys([*tc.get("additional_special_tokens", []), *extra]))
    # 4.x's PreTrainedTokenizerFast would also return token_type_ids, which generate() refuses for LLaVA
    tc["model_input_names"] = [n for n in hf_processor.tokenizer.model_input_names if n != "token_type_ids"]
    tc["chat_template"] = jinja
    write_json(path, tc)
    write_json(folder / "chat_template.json", {"chat_template": jinja})


def stop_settings(processor: Processor) -> tuple[list[int], list[str]]:
    """``(eos_token_id, stop_strings)`` that end generation where scitune's generator ends it: at EOS or at the token
    that completes the template's stop string.

    Every token whose text holds the stop string ends it (``eos_token_id``: honoured by ``generate`` of both lines and
    by vLLM). A stop string of one byte can only appear inside one token, so that is exact; a longer one can also be
    spread over several tokens (``"##"`` + ``"#"``), so it is also written to ``stop_strings`` (``generate`` then needs
    ``tokenizer=``).
    """
    tok = processor.tokenizer
    eos = [int(tok.eos_token_id)] if tok.eos_token_id is not None else []
    strings: list[str] = []
    texts: list[str] | None = None
    for s in processor.stop_strings():
        if s == tok.eos_token:
            continue
        texts = texts if texts is not None else tok.batch_decode([[i] for i in range(len(tok))])
        eos += [i for i, t in enumerate(texts) if s in t and i not in eos]
        if len(s.encode("utf-8")) > 1:
            strings.append(s)
    return eos, strings


def write_generation_config(processor: Processor, folder: Path) -> dict[str, Any]:
    """``generation_config.json``: greedy, scitune's default length, its stops (`stop_settings`); returns its fields."""
    from transformers import GenerationConfig

    from scitune.config.schema import GenerationConfig as Defaults

    eos, strings = stop_settings(processor)
    tok = processor.tokenizer
    gen = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=eos[0] if len(eos) == 1 else eos,
        pad_token_id=tok.pad_token_id,
        max_new_tokens=Defaults.max_new_tokens,
        do_sample=False,
        stop_strings=strings or None,
    )
    gen.save_pretrained(folder)
    return {"eos_token_id": eos, "stop_strings": strings}
