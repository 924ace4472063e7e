"""scitune's connectors as llava-hf ``multi_modal_projector`` weights (linear_1, activation, linear_2) and back.

An ``mlp2x-gelu`` connector is that MLP already. A linear connector ``W x + b`` (SciTune, LLaVA-1, LiMBeR) has two
forms: ``relu-pair``, an exact two-layer ReLU MLP that vLLM's LLaVA loader accepts (its projector knows no identity
activation), ``W x + b = [W, -W, 0] relu([I; -I; 0] x) + b``, which needs an LM at least twice as wide as the vision
features (vLLM fixes the inner width to the LM's); and ``identity``, ``linear_1 = W`` with the ``linear`` activation and
an identity ``linear_2``, which transformers loads but vLLM does not (written only where ``relu-pair`` does not fit).
"""

from __future__ import annotations

import torch

from scitune.model.projector import LinearProjector, MlpProjector

RELU_PAIR, IDENTITY, MLP = "relu-pair", "identity", "mlp"
"""Connector forms: the exact ReLU MLP of a linear map, the identity-activation form, a real MLP (``mlp2x-gelu``)."""
ACTIVATION = {RELU_PAIR: "relu", IDENTITY: "linear", MLP: "gelu"}
"""``projector_hidden_act`` of each form."""


def relu_pair_fits(vision_dim: int, text_dim: int) -> bool:
    """Whether a (vision_dim -> text_dim) linear map fits the ReLU form: the inner width (text_dim) must hold x and -x."""
    return text_dim >= 2 * vision_dim


def connector_form(projector: torch.nn.Module) -> str:
    """The form ``projector`` is exported in: `RELU_PAIR` for a linear map wherever it fits, else `IDENTITY`."""
    if isinstance(projector, MlpProjector):
        return MLP
    if not isinstance(projector, LinearProjector):
        raise ValueError(
            f"projector {type(projector).__name__} has no Llava equivalent; export supports linear and mlp2x-gelu"
        )
    d_in, d_out = projector.linear.in_features, projector.linear.out_features
    return RELU_PAIR if relu_pair_fits(d_in, d_out) else IDENTITY


@torch.no_grad()
def projector_state(projector: torch.nn.Module, form: str) -> dict[str, torch.Tensor]:
    """The connector as ``multi_modal_projector`` weights (``linear_1.*``, ``linear_2.*``) in ``form``."""
    if form == MLP:
        return {k: v for k, v in projector.state_dict().items() if k != "image_newline"}
    w, b = projector.linear.weight, projector.linear.bias  # (D_text, D_vision), (D_text,)
    d_out, d_in = w.shape
    like = {"dtype": w.dtype, "device": w.device}
    if form == IDENTITY:
        return {
            "linear_1.weight": w,
            "linear_1.bias": b,
            "linear_2.weight": torch.eye(d_out, **like),
            "linear_2.bias": torch.zeros(d_out, **like),
        }
    eye = torch.eye(d_in, **like)
    w1 = torch.zeros(d_out, d_in, **like)  # [I; -I; 0]: relu of it holds x+ and x-
    w1[:d_in], w1[d_in : 2 * d_in] = eye, -eye
    w2 = torch.zeros(d_out, d_out, **like)  # [W, -W, 0]: W x+ - W (-x)- = W x (one of each pair is 0, exactly)
    w2[:, :d_in], w2[:, d_in : 2 * d_in] = w, -w
    return {
        "linear_1.weight": w1,
        "linear_1.bias": torch.zeros(d_out, **like),
        "linear_2.weight": w2,
        "linear_2.bias": b,
    }


def linear_from_state(state: dict[str, torch.Tensor], act: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(W, b)`` when ``state`` (``multi_modal_projector`` weights with activation ``act``) is a linear map written in
    the ``identity`` or ``relu-pair`` form, exactly; None for any other MLP."""
    w1, b1 = state["linear_1.weight"], state.get("linear_1.bias")
    w2, b2 = state["linear_2.weight"], state.get("linear_2.bias")
    d_out, d_in = w1.shape
    b1 = torch.zeros(d_out, dtype=w1.dtype) if b1 is None else b1
    b2 = torch.zeros(d_out, dtype=w2.dtype) if b2 is None else b2
    if act == "linear":
        if torch.equal(w2, torch.eye(d_out, dtype=w2.dtype)) and not b2.any():
            return w1, b1
        return None
    if act != "relu" or not relu_pair_fits(d_in, d_out) or b1.any():
        return None
    eye = torch.eye(d_in, dtype=w1.dtype)
    first = torch.equal(w1[:d_in], eye) and torch.equal(w1[d_in : 2 * d_in], -eye) and not w1[2 * d_in :].any()
    w = w2[:, :d_in]
    if first and torch.equal(w2[:, d_in : 2 * d_in], -w) and not w2[:, 2 * d_in :].any():
        return w.clone(), b2.clone()
    return None
