"""Attention for packed rows on SDPA: each sample attends causally to itself only, with no work across samples.

A packed row holds several samples back to back. Under plain SDPA, transformers gives it a block-diagonal causal
mask, and the kernel then computes the whole (row x row) square, most of it masked out; it cannot use its causal
fast path either. This implementation (registered in transformers' ``AttentionInterface`` as ``sdpa_varlen``) runs
SDPA once per sample span, causal, on that span alone: the work of attending within each sample, as
FlashAttention's varlen kernel does on GPU. The spans come from ``cu_seq_lens_q`` (FlashAttention's keyword:
cumulative sample lengths over the flattened rows), which `packed_kwargs` builds from the packed position ids and
transformers passes down to every attention layer. Without them (padded batches, generation), it is plain SDPA.

From transformers 4.53 on, the block-diagonal mask transformers builds from the restarting position ids is still
passed, and still correct: a model whose layers did not pass the keywords on would get the masked result, not a wrong
one. Before 4.53 no such mask exists, which is why the trainer packs only where packing is exact
(`scitune.train.batches.packing_is_exact`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch

log = logging.getLogger(__name__)

VARLEN = "sdpa_varlen"


def packed_kwargs(position_ids: torch.Tensor) -> dict[str, Any]:
    """FlashAttention's varlen keywords for packed rows whose position ids restart at 0 with each sample."""
    starts = (position_ids.flatten() == 0).nonzero().flatten()
    total = torch.tensor([position_ids.numel()], device=position_ids.device)
    cu = torch.cat([starts, total]).to(torch.int32)
    longest = int((cu[1:] - cu[:-1]).max())
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}


def sdpa_varlen_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: query (B, H, L, D), key/value (B, H_kv, L, D) -> (B, L, H, D)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu = kwargs.pop("cu_seq_lens_q", None)
    batch, heads, length, dim = query.shape
    bounds = cu.tolist() if cu is not None else [0]
    if bounds[-1] != batch * length or key.shape[2] != length or not getattr(module, "is_causal", True):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs)
    window = kwargs.get("sliding_window")

    def flat(t: torch.Tensor) -> torch.Tensor:  # (B, H, L, D) -> (1, H, B * L, D)
        return t.transpose(0, 1).reshape(1, t.shape[1], -1, t.shape[3])

    def causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n = q.shape[2]
        if not window or n <= window:
            return sdpa_attention_forward(module, q, k, v, None, dropout, scaling, True)[0]
        i = torch.arange(n, device=q.device)  # a sliding window (Mistral-style): key within `window` before the query
        band = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < window)
        return sdpa_attention_forward(module, q, k, v, band[None, None], dropout, scaling, False)[0]

    q, k, v = flat(query), flat(key), flat(value)
    spans = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    parts = [causal(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b]) for a, b in spans]
    return torch.cat(parts, dim=1).reshape(batch, length, heads, dim), None


def register() -> bool:
    """Register ``sdpa_varlen`` (and SDPA's mask builder under that name); False when transformers is too old to
    look attention functions up by name (< 4.48)."""
    try:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    except ImportError:
        return False
    if hasattr(ALL_ATTENTION_FUNCTIONS, "register"):  # transformers >= 4.51: AttentionInterface
        ALL_ATTENTION_FUNCTIONS.register(VARLEN, sdpa_varlen_forward)
    else:  # 4.48 - 4.50: a plain dict
        ALL_ATTENTION_FUNCTIONS[VARLEN] = sdpa_varlen_forward
    try:
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:  # transformers < 4.53 builds masks by name; an unknown one gets the 4-D (eager) mask
        return True
    AttentionMaskInterface.register(VARLEN, sdpa_mask)
    return True


def masks_packed_rows() -> bool:
    """Whether transformers turns restarting position ids (with no attention mask) into a block-diagonal mask for
    SDPA and eager attention (>= 4.53); older versions let packed samples attend to each other."""
    try:
        from transformers.masking_utils import find_packed_sequence_indices  # noqa: F401
    except ImportError:
        return False
    return True


def _configs(llm: torch.nn.Module) -> list[Any]:
    """The config objects whose ``_attn_implementation`` the LLM's attention layers read."""
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    seen: dict[int, Any] = {}
    for m in base.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            seen.setdefault(id(cfg), cfg)
    return list(seen.values())


@contextlib.contextmanager
def varlen_attention(llm: torch.nn.Module, enabled: bool = True) -> Iterator[bool]:
    """Within the block, an LLM on SDPA attends per packed sample (yields whether it does); restored afterwards."""
    configs = [c for c in _configs(llm) if c._attn_implementation == "sdpa"] if enabled else []
    if not configs or not register():
        yield False
        return
    for c in configs:
        c._attn_implementation = VARLEN
    log.info("packed rows: attention per sample (%s)", VARLEN)
    try:
        yield True
    finally:
        for c in configs:
            c._attn_implementation = "sdpa"
