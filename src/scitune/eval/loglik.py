"""Log-likelihood scoring of text continuations (TruthfulQA MC, ETHICS): the summed log-probability that a causal
LM gives each choice after a prompt, batched, as lm-evaluation-harness' ``loglikelihood`` requests compute it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["choice_logprobs", "continuation_logprobs", "unwrap_llm"]


def unwrap_llm(model_or_llm: Any) -> Any:
    """The causal LM of a `VisionLanguageModel` (its ``.llm``), or the argument itself."""
    return getattr(model_or_llm, "llm", model_or_llm)


def _encode(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], int]:
    """Token ids of ``context + continuation`` and how many of the last ones belong to the continuation.

    As lm-evaluation-harness: trailing spaces of the context move to the continuation, the whole string is
    tokenized once and the continuation is what follows the context's own tokens (so a merge across the boundary
    is scored as part of the continuation). The tokenizer's special tokens (e.g. LLaMA's BOS) are added.
    """
    n_spaces = len(context) - len(context.rstrip(" "))
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = tokenizer(context + continuation)["input_ids"]
    ctx = tokenizer(context)["input_ids"]
    n_cont = len(whole) - len(ctx)
    if n_cont <= 0:
        raise ValueError(f"continuation {continuation!r} adds no tokens to its context")
    return list(whole), n_cont


@torch.no_grad()
def continuation_logprobs(
    model_or_llm: Any,
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    batch_size: int = 8,
) -> list[float]:
    """Summed log-probability of each ``continuation`` given its ``context``.

    Args:
        model_or_llm: an HF causal LM, or a `VisionLanguageModel` (its LLM is used; no image).
        tokenizer: the LM's tokenizer.
        pairs: ``(context, continuation)`` pairs.
        batch_size: sequences per forward pass (right-padded; longest first to pad little).

    Returns:
        One float per pair, in input order.
    """
    llm = unwrap_llm(model_or_llm)
    device = next(llm.parameters()).device
    encoded = [_encode(tokenizer, c, x) for c, x in pairs]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = [0.0] * len(encoded)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(encoded[i][0]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            seq = encoded[i][0]
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        logits = llm(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (B, L, V)
        for row, i in enumerate(idx):
            seq, n_cont = encoded[i]
            # the logits at position t predict token t+1: the continuation's tokens are predicted by the n_cont
            # positions before the sequence's last one
            pos = torch.arange(len(seq) - n_cont - 1, len(seq) - 1, device=logits.device)
            logp = torch.log_softmax(logits[row, pos].float(), dim=-1)  # (n_cont, V)
            target = torch.tensor(seq[len(seq) - n_cont :], device=logits.device)
            out[i] = float(logp.gather(1, target[:, None]).sum())
    return out


def choice_logprobs(
    model_or_llm: Any, tokenizer: Any, prompt: str, choices: Sequence[str], batch_size: int = 8
) -> list[float]:
    """Summed log-probability of each choice as a continuation of ``prompt`` (one batched call).

    Args:
        model_or_llm: an HF causal LM or a `VisionLanguageModel` (its LLM is used).
        tokenizer: the LM's tokenizer.
        prompt: the context, e.g. ``"...\\nQ: What happens if ...?\\nA:"``.
        choices: the continuations, e.g. ``[" Nothing happens.", " You die."]`` (leading space included).
        batch_size: sequences per forward pass.
    """
    return continuation_logprobs(model_or_llm, tokenizer, [(prompt, c) for c in choices], batch_size)
