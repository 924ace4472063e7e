"""Bottleneck adapters placed in a frozen LM's blocks through forward hooks (any HF causal LM): MAGMA's sequential
adapters after a sub-block, and He et al. (2022)'s parallel and scaled-parallel adapters beside it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from scitune.registry import Registry

# Child names of the attention / MLP block inside one decoder layer, per architecture family (exact names).
ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")
MLP_NAMES = ("mlp", "feed_forward", "ffn")


class BottleneckAdapter(nn.Module):
    """``h + scale * up(act(down(h)))``; ``up`` starts at zero, so a fresh adapter leaves the LM unchanged."""

    def __init__(self, dim: int, downsample_factor: int = 4):
        super().__init__()
        hidden = max(1, dim // downsample_factor)
        self.down = nn.Linear(dim, hidden)
        self.act = nn.ReLU()
        self.up = nn.Linear(hidden, dim)
        self.scale = nn.Parameter(torch.ones(()))
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        delta = self.up(self.act(self.down(h.to(self.down.weight.dtype))))
        return h + (self.scale * delta).to(h.dtype)


class ParallelAdapter(nn.Module):
    """He et al.'s parallel adapter: ``s * up(act(down(x)))`` from the sub-block's input ``x``, added to its output.

    ``scaled`` makes ``s`` a learned scalar starting at 1 (MAGMA's ``scaled_parallel``); otherwise ``s`` = 1. ``up``
    starts at zero, so a fresh adapter leaves the LM unchanged.
    """

    def __init__(self, dim: int, downsample_factor: int = 4, scaled: bool = False):
        super().__init__()
        hidden = max(1, dim // downsample_factor)
        self.down = nn.Linear(dim, hidden)
        self.act = nn.ReLU()
        self.up = nn.Linear(hidden, dim)
        if scaled:
            self.scale = nn.Parameter(torch.ones(()))
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x``: the sub-block's input, ``y``: its output, both (B, T, D)."""
        delta = self.up(self.act(self.down(x.to(self.down.weight.dtype))))
        if hasattr(self, "scale"):
            delta = self.scale * delta
        return y + delta.to(y.dtype)


@dataclass(frozen=True)
class AdapterSpec:
    """Where adapters go (after/beside the attention block, the MLP block, or both) and which kind they are."""

    location: str = "both"
    kind: str = "sequential"
    """sequential (MAGMA's, after the sub-block) | parallel | scaled-parallel (He et al. 2022)."""


ADAPTERS: Registry[AdapterSpec] = Registry("adapter")
ADAPTERS.add("magma", AdapterSpec("both"))
ADAPTERS.add("magma-mlp", AdapterSpec("mlp"))  # the released MAGMA_v1 layout (with downsample factor 4)
ADAPTERS.add("magma-attn", AdapterSpec("attn"))
for _kind in ("parallel", "scaled-parallel"):
    ADAPTERS.add(_kind, AdapterSpec("both", _kind))
    ADAPTERS.add(f"{_kind}-mlp", AdapterSpec("mlp", _kind))
    ADAPTERS.add(f"{_kind}-attn", AdapterSpec("attn", _kind))


def decoder_layers(llm: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a HF causal LM (classes named in ``_no_split_modules``)."""
    base = llm.get_base_model() if hasattr(llm, "peft_config") else llm
    names = set(getattr(base, "_no_split_modules", None) or [])
    layers = [m for m in base.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"cannot find the decoder blocks of {type(base).__name__} (no _no_split_modules)")
    return layers


def _child(layer: nn.Module, names: tuple[str, ...]) -> nn.Module:
    for n in names:
        if isinstance(getattr(layer, n, None), nn.Module):
            return getattr(layer, n)
    raise ValueError(f"{type(layer).__name__} has none of the sub-blocks {names}; adapters cannot be placed")


class AdapterSet(nn.Module):
    """One adapter per (block, sub-block), attached to the LM with forward hooks; the LM's weights are untouched."""

    def __init__(self, llm: nn.Module, name: str = "magma", downsample_factor: int = 4):
        super().__init__()
        self.name, self.downsample_factor = name, downsample_factor
        spec = ADAPTERS.get(name)
        self.kind = spec.kind
        self.kinds = ("attn", "mlp") if spec.location == "both" else (spec.location,)
        self.dim = llm.get_input_embeddings().embedding_dim
        self.layers = decoder_layers(llm)

        def make() -> nn.Module:
            if self.kind == "sequential":
                return BottleneckAdapter(self.dim, downsample_factor)
            return ParallelAdapter(self.dim, downsample_factor, scaled=self.kind == "scaled-parallel")

        self.adapters = nn.ModuleDict({f"{i}_{k}": make() for i in range(len(self.layers)) for k in self.kinds})
        self._handles: list = []
        self.attach()

    def attach(self) -> None:
        """Register the hooks (idempotent)."""
        self.detach()
        for i, layer in enumerate(self.layers):
            for k in self.kinds:
                block = _child(layer, ATTN_NAMES if k == "attn" else MLP_NAMES)
                self._handles.append(block.register_forward_hook(self._hook(f"{i}_{k}"), with_kwargs=True))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _hook(self, key: str):
        def hook(_module, args, kwargs, output):
            adapter = self.adapters[key]
            y = output[0] if isinstance(output, tuple) else output
            if self.kind == "sequential":
                y = adapter(y)
            else:  # the sub-block's input: first positional argument, or hidden_states passed by name
                y = adapter(args[0] if args else kwargs["hidden_states"], y)
            return (y,) + tuple(output[1:]) if isinstance(output, tuple) else y

        return hook
