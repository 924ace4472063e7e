"""Next-token pretraining of a micro causal LM (a real ``LlamaForCausalLM`` from a small ``LlamaConfig``)."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from scitune.pretrain.common import decay_groups, save_folder, train_epochs

log = logging.getLogger(__name__)


@dataclass
class LmPretrainConfig:
    """Size and schedule of the micro LM."""

    hidden: int = 128
    """Width of the decoder."""
    layers: int = 2
    """Decoder blocks."""
    heads: int = 4
    """Attention heads (key/value heads: half as many)."""
    block_size: int = 256
    """Tokens per training sequence (documents are packed, separated by EOS/BOS)."""
    max_position: int = 1024
    """Longest context the model accepts (the rotary embedding has no learned table, so this only sets a limit)."""
    batch_size: int = 16
    """Sequences per step."""
    epochs: float = 2.0
    """Passes over the packed corpus."""
    lr: float = 3e-3
    """Peak AdamW learning rate (linear warmup over the first 10% of steps, then cosine)."""
    weight_decay: float = 0.05
    """AdamW weight decay on matrices."""
    seed: int = 0
    """Seed of the initialisation and the batch order."""


def build_lm(cfg: LmPretrainConfig, vocab_size: int, bos: int, eos: int, pad: int) -> Any:
    """A randomly initialised ``LlamaForCausalLM`` of the configured size."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden,
        intermediate_size=3 * cfg.hidden,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=max(1, cfg.heads // 2),
        max_position_embeddings=cfg.max_position,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def pack(docs: list[str] | list[list[int]], tokenizer: Any, block_size: int) -> torch.Tensor:
    """Concatenate the documents and cut the stream into rows of ``block_size + 1`` tokens.

    A text becomes ``<s> text </s>``; a list of token ids is taken as it is (e.g. a chat tokenized segment by
    segment, exactly as fine-tuning will see it).
    """
    stream: list[int] = []
    texts = [d for d in docs if isinstance(d, str)]
    encoded = iter(tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else [])
    for d in docs:
        stream += [tokenizer.bos_token_id, *next(encoded), tokenizer.eos_token_id] if isinstance(d, str) else list(d)
    rows = len(stream) // (block_size + 1)
    if rows == 0:
        raise ValueError(f"corpus of {len(stream)} tokens is shorter than one block of {block_size + 1}")
    return torch.tensor(stream[: rows * (block_size + 1)]).view(rows, block_size + 1)


def pretrain_lm(
    texts: list[str] | list[list[int]],
    tokenizer: Any,
    cfg: LmPretrainConfig,
    out_dir: str | os.PathLike[str],
    progress: bool = True,
) -> dict[str, Any]:
    """Train a micro LM on ``texts`` and save it with its tokenizer as a Hugging Face folder.

    ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` read the folder, so it goes
    through the same loading code as downloaded weights (``--model.llm.path``).

    Args:
        texts: the corpus: texts, or documents already tokenized (lists of ids); packed into blocks.
        tokenizer: a tokenizer from `train_bpe_tokenizer` (its vocabulary sets the embedding size).
        cfg: sizes and schedule.
        out_dir: the folder to write (replaced atomically).
        progress: show a progress bar.

    Returns:
        ``{"steps", "losses", "seconds", "parameters", "tokens"}``.
    """
    data = pack(texts, tokenizer, cfg.block_size)  # (rows, block + 1)
    model = build_lm(cfg, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    opt = torch.optim.AdamW(decay_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95))
    t0 = time.perf_counter()

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        batch = data[idx]
        logits = model(input_ids=batch[:, :-1]).logits  # (B, T, V)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1))

    losses = train_epochs(model, opt, len(data), min(cfg.batch_size, len(data)), cfg.epochs, cfg.lr, cfg.seed, loss_fn,
                          "pretrain LM", progress)  # fmt: skip
    total = len(losses)
    save_folder(out_dir, lambda tmp: (model.save_pretrained(tmp), tokenizer.save_pretrained(tmp)))
    params = sum(p.numel() for p in model.parameters())
    log.info("micro LM: %d steps, loss %.3f -> %.3f, %s params", total, losses[0], losses[-1], f"{params:,}")
    return {"steps": total, "losses": losses, "seconds": round(time.perf_counter() - t0, 1), "parameters": params,
            "tokens": int(data.numel())}  # fmt: skip
