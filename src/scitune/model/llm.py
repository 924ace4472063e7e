"""Decoder LLMs: loading any AutoModelForCausalLM and its tokenizer, and per-architecture facts."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from scitune.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LlmSpec:
    """Facts about one HF ``model_type`` that training needs."""

    decoder_layer: str | None = None
    """Class name of one transformer block (FSDP wrapping unit); None = use the model's _no_split_modules."""


LLMS: Registry[LlmSpec] = Registry("llm")
LLMS.add("causal-lm", LlmSpec())
LLMS.add("llama", LlmSpec("LlamaDecoderLayer"))
LLMS.add("mistral", LlmSpec("MistralDecoderLayer"))
LLMS.add("qwen2", LlmSpec("Qwen2DecoderLayer"))
LLMS.add("gpt-neox", LlmSpec("GPTNeoXLayer"))
LLMS.add("gptj", LlmSpec("GPTJBlock"))


def llm_spec(model_type: str) -> LlmSpec:
    """The spec registered for a HF ``config.model_type`` (underscores read as dashes), else the generic one."""
    key = model_type.replace("_", "-")
    return LLMS.get(key) if key in LLMS else LLMS.get("causal-lm")


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_qlora_available() -> None:
    """QLoRA's 4-bit path needs a CUDA GPU and bitsandbytes; say so before anything is loaded."""
    import importlib.util

    if not torch.cuda.is_available():
        raise ValueError("--train.lora.quantize 4bit (QLoRA) needs a CUDA GPU; on CPU use plain LoRA (quantize none)")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError("--train.lora.quantize 4bit needs bitsandbytes: pip install bitsandbytes")


def load_llm(path: str, dtype: str = "float32", attn_implementation: str | None = None, quantize: str = "none"):
    """Load any causal LM with ``AutoModelForCausalLM.from_pretrained`` (``quantize='4bit'``: NF4 for QLoRA)."""
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": DTYPES[dtype]}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantize == "4bit":
        from transformers import BitsAndBytesConfig

        check_qlora_available()
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
    return AutoModelForCausalLM.from_pretrained(path, **kwargs)


@torch.no_grad()
def fit_vocab(llm, vocab_size: int) -> None:
    """Grow the LLM's embeddings to ``vocab_size``; new rows are the mean of the old ones (deterministic)."""
    emb = llm.get_input_embeddings()
    old = emb.weight.shape[0]
    if vocab_size <= old:
        return
    llm.resize_token_embeddings(vocab_size, mean_resizing=False)
    new_in = llm.get_input_embeddings().weight
    new_in[old:] = new_in[:old].mean(0, keepdim=True)
    out = llm.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != new_in.data_ptr():
        out.weight[old:] = out.weight[:old].mean(0, keepdim=True)
    log.info("resized LLM vocabulary %d -> %d", old, vocab_size)
