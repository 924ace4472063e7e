"""The training loss: next-token cross-entropy summed over labelled positions.

The LM head runs only where the loss reads a logit (the positions followed by a labelled token), through
transformers' ``logits_to_keep``. In SciTune's stages most tokens are unlabelled (image tokens, system prompt,
question: about 70 % of an align sample), so this skips most of the (vocabulary x hidden) projection and never holds
the full (batch, length, vocabulary) logits in memory. The loss and gradients are those of the full-logits path.
"""

from __future__ import annotations

import inspect
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F

from scitune.data.tokenize import IGNORE_INDEX


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over labelled positions of full logits (B, L, V), in fp32."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:].to(logits.device)
    return F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def predicting_positions(labels: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: True where the next token is labelled, i.e. where the loss reads a logit."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


@cache
def _logits_to_keep_mode(forward_owner: type) -> str:
    """How a causal LM class takes ``logits_to_keep``: "mask" (2-D bool, transformers >= 5), "index" or "none"."""
    if "logits_to_keep" not in inspect.signature(forward_owner.forward).parameters:
        return "none"
    try:
        from transformers.modeling_utils import slice_logits_to_keep  # noqa: F401  (2-D bool masks)
    except ImportError:
        return "index"
    return "mask"


def logits_mode(llm: torch.nn.Module) -> str:
    """`_logits_to_keep_mode` of an LLM, looking through a peft wrapper to the model that computes the logits."""
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    return _logits_to_keep_mode(type(base))


def batch_loss_sum(model: torch.nn.Module, inputs: dict[str, Any], labels: torch.Tensor, mode: str) -> torch.Tensor:
    """Forward ``model`` (a `VisionLanguageModel`, possibly wrapped by DDP) and return the summed token loss.

    ``mode`` is `logits_mode` of its LLM: "mask" computes logits only at `predicting_positions`, "index" at the
    positions labelled in any row of the batch, "none" everywhere.
    """
    if mode == "none":
        return token_loss_sum(model(**inputs).logits, labels)
    device = inputs["input_ids"].device
    keep = predicting_positions(labels).to(device)
    if mode == "mask":
        logits = model(**inputs, logits_to_keep=keep).logits  # (n_kept, V)
        targets = labels.to(device)[:, 1:][keep[:, :-1]]
    else:
        index = keep.any(0).nonzero().squeeze(-1)
        logits = model(**inputs, logits_to_keep=index).logits.flatten(0, 1)  # (B * n_kept, V)
        targets = labels.to(device)[:, index + 1].reshape(-1)
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")
