"""Connectors (projectors) from vision features to LLM input embeddings."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from scitune.registry import Registry

PROJECTORS: Registry[Callable[[int, int], nn.Module]] = Registry("projector")


@PROJECTORS.register("linear")
class LinearProjector(nn.Module):
    """One linear layer (SciTune, LLaVA-1, LiMBeR)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D_vis) -> (B, N, D_llm)
        return self.linear(x)


@PROJECTORS.register("mlp2x-gelu")
class MlpProjector(nn.Module):
    """Two linear layers with a GELU between (LLaVA-1.5); names match transformers' Llava projector."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


@PROJECTORS.register("identity")
class IdentityProjector(nn.Module):
    """No parameters; vision width must equal the LLM width."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        if in_dim != out_dim:
            raise ValueError(f"projector 'identity' needs equal widths, got vision {in_dim} vs LLM {out_dim}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@PROJECTORS.register("linear-prefix")
class LinearPrefixProjector(nn.Module):
    """LiMBeR's map for pooled encoders: one vector (B, 1, D_vis) -> ``num_tokens`` prompt tokens (B, k, D_llm)."""

    def __init__(self, in_dim: int, out_dim: int, num_tokens: int = 0):
        super().__init__()
        if num_tokens < 1:
            raise ValueError("projector 'linear-prefix' needs --model.projector.num_tokens >= 1 (LiMBeR's k)")
        self.num_tokens, self.out_dim = num_tokens, out_dim
        self.linear = nn.Linear(in_dim, num_tokens * out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 1:
            raise ValueError(
                f"linear-prefix expects one pooled vector per image (set --model.vision.select pooled), "
                f"got {x.shape[1]} tokens"
            )
        return self.linear(x[:, 0]).view(x.shape[0], self.num_tokens, self.out_dim)


@PROJECTORS.register("linear-ln")
class LinearNormProjector(nn.Module):
    """MAGMA's image prefix: a linear map then a LayerNorm over the LLM width (its 0.1 training dropout left out)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D_vis) -> (B, N, D_llm)
        return self.norm(self.linear(x))


def build_projector(name: str, in_dim: int, out_dim: int, num_tokens: int = 0) -> nn.Module:
    """Build the projector registered as ``name`` (``num_tokens`` is used by prefix projectors only)."""
    cls = PROJECTORS.get(name)
    return cls(in_dim, out_dim, num_tokens) if name == "linear-prefix" else cls(in_dim, out_dim)
