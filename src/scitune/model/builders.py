"""Builders: parts -> `VisionLanguageModel`, and the tiny random parts that tests and docs use (`scitune.loader`\nbuilds whole models with their processors from configs)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from scitune.config.schema import DEFAULT_IMAGE_TOKEN, VisionConfig
from scitune.model.adapters import AdapterSet
from scitune.model.anyres import format_grid, parse_grids
from scitune.model.llm import fit_vocab
from scitune.model.projector import build_projector
from scitune.model.vision import VisionEncoder
from scitune.model.vlm import VisionLanguageModel

CHAT_SPECIALS = ["<s>", "</s>", "<unk>", "<pad>", DEFAULT_IMAGE_TOKEN]
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_TINY_CORPUS = [
    "A chat between a curious human and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    "Human: Describe the following image in detail. Assistant: Graph Plot Accuracy versus epochs for two models.",
    "USER: What is shown? ASSISTANT: A bar chart of the measured values. ###",
    "Question: Which figure type is shown? Options: (A) Bar Chart (B) Scatterplot. The answer is A.",
    "LECTURE: Figures show data. SOLUTION: The bars are rectangles. Node Diagram Equation 0123456789",
]


def _abs_if_local(path: str | None) -> str | None:
    return os.path.abspath(path) if path and os.path.isdir(path) else path


def assemble(
    vision: VisionEncoder,
    llm: torch.nn.Module,
    projector_name: str,
    identity: dict[str, Any],
    image_token_id: int,
    vocab_size: int,
    projector_tokens: int = 0,
    adapter: str | None = None,
    adapter_downsample: int = 4,
    anyres: Sequence[str] = (),
) -> VisionLanguageModel:
    """Compose parts into a `VisionLanguageModel` (the LLM's vocabulary grows to ``vocab_size``: the tokenizer's,
    with the image token and any other tokens the processor added; new rows start at the mean of the old ones).

    Args:
        image_token_id: vocabulary id of the image placeholder (the processor's).
        vocab_size: the tokenizer's length.
        projector_tokens: prompt tokens per image for the ``linear-prefix`` projector.
        adapter: an `ADAPTERS` key (MAGMA adapters in the LM blocks) or None.
        adapter_downsample: adapter bottleneck factor.
        anyres: AnyRes grids (``["1x1", "2x2"]``).
    """
    base_vocab = int(llm.get_input_embeddings().weight.shape[0])
    fit_vocab(llm, vocab_size)
    llm_dim = llm.get_input_embeddings().embedding_dim
    projector = build_projector(projector_name, vision.hidden_size, llm_dim, projector_tokens)
    adapters = AdapterSet(llm, adapter, adapter_downsample) if adapter else None
    grids = parse_grids(anyres)
    if grids:  # recorded only when on, so the identity of a model without AnyRes stays as it was
        identity = {**identity, "vision": {**identity.get("vision", {}), "anyres": [format_grid(g) for g in grids]}}
    identity = {
        **identity,
        "llm": {**identity.get("llm", {}), "base_vocab": base_vocab},
        "projector": {"name": projector_name, "num_tokens": projector_tokens},
        "adapter": {"name": adapter, "downsample_factor": adapter_downsample} if adapter else None,
    }
    return VisionLanguageModel(vision, projector, llm, image_token_id, identity, adapters, grids)


def vision_identity(cfg: VisionConfig) -> dict[str, Any]:
    """What names a vision encoder in a checkpoint's identity (and in a feature cache's)."""
    ident = {
        "name": cfg.name,
        "path": _abs_if_local(cfg.path),
        "feature_layer": cfg.feature_layer,
        "select": cfg.select,
    }
    if cfg.random_init:  # recorded only when on, so the identity of a pretrained encoder stays as it was
        ident["random_init"] = True
    return ident


# ---------------------------------------------------------------- tiny models (tests, docs, smoke runs)
def tiny_tokenizer(corpus: list[str] | None = None, vocab_size: int = 400):
    """A byte-level BPE tokenizer trained in-process, with the chat special tokens and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=CHAT_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus or _TINY_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_input_names=["input_ids", "attention_mask"],  # as LLaMA's; 4.x's default adds token_type_ids
    )
    fast.add_special_tokens({"additional_special_tokens": [DEFAULT_IMAGE_TOKEN]})
    fast.chat_template = TINY_CHAT_TEMPLATE
    return fast


def tiny_vision(seed: int = 0, image_size: int = 32, patch_size: int = 8, hidden: int = 32, layers: int = 2):
    """A random `CLIPVisionModel` and a matching `CLIPImageProcessor`."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=hidden,
    )
    model = CLIPVisionModel(cfg).eval()
    proc = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    return model, proc


def tiny_llm(vocab_size: int, seed: int = 0, hidden: int = 32, layers: int = 2, bos: int = 0, eos: int = 1):
    """A random `LlamaForCausalLM` (hidden 32, 2 layers, 4 heads, 2 KV heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=3,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg).eval()


def save_tiny_base(out_dir: str | os.PathLike[str], seed: int = 0) -> dict[str, str]:
    """Write a tiny CLIP (vision/) and a tiny LLaMA + tokenizer (llm/) as HF folders; return their paths.

    Configs then point ``--model.vision.path`` / ``--model.llm.path`` at them, so the tiny models load through the
    same ``from_pretrained`` code as real weights.
    """
    out = Path(out_dir)
    tok = tiny_tokenizer()
    vision_model, proc = tiny_vision(seed)
    llm = tiny_llm(len(tok), seed, bos=tok.bos_token_id, eos=tok.eos_token_id)
    vision_model.save_pretrained(out / "vision")
    proc.save_pretrained(out / "vision")
    llm.save_pretrained(out / "llm")
    tok.save_pretrained(out / "llm")
    return {"vision": str(out / "vision"), "llm": str(out / "llm")}
