"""The KV-cache adapter, the one place that knows how a transformers version names and stores the cache: the engine
sees per-layer (keys, values) of shape (B, H, L, D), merged when rows join (left-padded to one length) and selected
and trimmed when rows leave."""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F

Layers = list[tuple[torch.Tensor, torch.Tensor]]


def _forward_params(llm: Any) -> set[str]:
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm  # a peft wrapper passes kwargs through
    return set(inspect.signature(type(base).forward).parameters)


class KVCacheAdapter:
    """Creates, passes, reads and rewrites an HF ``DynamicCache`` for one LLM, whatever the transformers version.

    Verified layouts:
      - transformers 5.x: ``forward(cache=...)``, output ``.cache``; ``cache.layers[i].keys/.values``.
      - transformers 4.56 - 4.57: ``forward(past_key_values=...)``, output ``.past_key_values``; the same ``layers``.
      - older (fallback): ``cache.key_cache[i]`` / ``cache.value_cache[i]`` lists, or legacy tuples of (k, v).

    The engine makes the cache itself (``DynamicCache()`` without a config), so every layer is a plain full-attention
    layer that holds all keys and values; a sliding-window model then attends over its whole (short) context, as
    transformers' own generate does with left padding.
    """

    def __init__(self, llm: Any):
        params = _forward_params(llm)
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.logits_arg = next((a for a in ("logits_to_keep", "num_logits_to_keep") if a in params), None)

    def new(self) -> Any:
        """An empty cache the model fills on its first forward."""
        from transformers import DynamicCache

        return DynamicCache()

    def forward_kwargs(self, cache: Any | None, every_position: bool = False) -> dict[str, Any]:
        """Keyword arguments for ``llm(...)``: the cache under its name (None: no cache), and the last position's
        logits only unless ``every_position`` (prompt log-probabilities)."""
        kw: dict[str, Any] = {"use_cache": False} if cache is None else {self.cache_arg: cache, "use_cache": True}
        if self.logits_arg:
            kw[self.logits_arg] = 0 if every_position else 1  # transformers: 0 = every position
        return kw

    def returned(self, out: Any, given: Any) -> Any:
        """The cache an ``llm(...)`` output carries (the same object as ``given`` for a DynamicCache)."""
        got = getattr(out, "cache", None)
        if got is None:
            got = getattr(out, "past_key_values", None)
        return given if got is None else got

    def layers(self, cache: Any) -> Layers:
        """Per-layer (keys, values), each (B, H, L, D)."""
        layers = getattr(cache, "layers", None)
        if layers is not None:  # transformers >= 4.56
            for layer in layers:
                if getattr(layer, "is_sliding", False) or not isinstance(getattr(layer, "keys", None), torch.Tensor):
                    raise NotImplementedError(f"cannot batch a {type(layer).__name__} cache layer")
            return [(layer.keys, layer.values) for layer in layers]
        if hasattr(cache, "key_cache"):  # transformers < 4.56
            return list(zip(cache.key_cache, cache.value_cache))
        return [(k, v) for k, v, *_ in cache]  # legacy tuples

    def replace(self, cache: Any, layers: Layers) -> Any:
        """Write ``layers`` into ``cache`` (in place where the layout allows; returns the cache to use)."""
        if getattr(cache, "layers", None) is not None:
            for layer, (k, v) in zip(cache.layers, layers):
                layer.keys, layer.values = k, v
            return cache
        if hasattr(cache, "key_cache"):
            cache.key_cache[:] = [k for k, _ in layers]
            cache.value_cache[:] = [v for _, v in layers]
            if hasattr(cache, "_seen_tokens"):
                cache._seen_tokens = layers[0][0].shape[-2]
            return cache
        return tuple(layers)

    # ---- batch surgery (the engine's only cache operations)
    def select(self, cache: Any, rows: torch.Tensor) -> Any:
        """Keep only ``rows`` (a 1-D index tensor) of the batch."""
        return self.replace(cache, [(k[rows], v[rows]) for k, v in self.layers(cache)])

    def trim(self, cache: Any, n: int) -> Any:
        """Drop the first ``n`` positions (columns that are padding for every row)."""
        return self.replace(cache, [(k[:, :, n:], v[:, :, n:]) for k, v in self.layers(cache)])

    def merge(self, cache: Any, other: Any) -> Any:
        """Append the rows of ``other`` to ``cache``, left-padding the shorter one with zeros to a common length."""
        a, b = self.layers(cache), self.layers(other)
        la, lb = a[0][0].shape[-2], b[0][0].shape[-2]
        n = max(la, lb)
        merged = [
            (
                torch.cat([pad_left(ka, n - la), pad_left(kb, n - lb)]),
                torch.cat([pad_left(va, n - la), pad_left(vb, n - lb)]),
            )
            for (ka, va), (kb, vb) in zip(a, b)
        ]
        return self.replace(cache, merged)


def pad_left(t: torch.Tensor, n: int, dim: int = -2) -> torch.Tensor:
    """``n`` zeros before ``t`` along ``dim``, counted from the end: -2 for keys (B, H, L, D) and embeddings
    (B, L, D), -1 for attention masks (B, L)."""
    if n == 0:
        return t
    return F.pad(t, [0, 0] * (-dim - 1) + [n, 0])
