"""`VisionLanguageModel`: a vision encoder, a connector and a causal LM composed (never subclassed)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from scitune.model.anyres import LAYOUTS, Grid, llava_next_token_count, pack_llava_next
from scitune.model.vision import VisionEncoder

log = logging.getLogger(__name__)


class VisionLanguageModel(nn.Module):
    """Splices projected image features into the LLM's input embeddings at image-token positions.

    The text side carries ``num_image_tokens`` copies of ``image_token_id`` per image (expanded at tokenization),
    so the layout is the same as transformers' ``LlavaForConditionalGeneration``.

    Args:
        vision: the vision encoder.
        projector: maps (B, N, D_vis) to (B, N, D_llm).
        llm: any HF causal LM (or a peft wrapper of one).
        image_token_id: vocabulary id of the image placeholder.
        identity: what `scitune.json` records about the parts (registry keys, paths, settings).
        adapters: MAGMA adapters inside the LLM, or None.
        anyres_grids: AnyRes candidate grids (rows, cols); empty = one encoder pass per image. With AnyRes an image
            is its overview + rows*cols tiles, each encoded to ``num_image_tokens`` features.
        anyres_layout: how those features go into the text (`scitune.model.anyres.LAYOUTS`): ``llava-next`` (the
            default; the connector gets a learned ``image_newline``, trained and saved with it) or ``tiles``.

    The model holds no tokenizer, image processor or template: `scitune.processor.Processor` makes its inputs.
    """

    def __init__(
        self,
        vision: VisionEncoder,
        projector: nn.Module,
        llm: nn.Module,
        image_token_id: int,
        identity: dict[str, Any] | None = None,
        adapters: nn.Module | None = None,
        anyres_grids: Sequence[Grid] = (),
        anyres_layout: str = "llava-next",
    ):
        super().__init__()
        self.vision = vision
        self.projector = projector
        self.llm = llm
        self.adapters = adapters
        self.image_token_id = int(image_token_id)
        self.anyres_grids: tuple[Grid, ...] = tuple(tuple(g) for g in anyres_grids)
        self.identity: dict[str, Any] = dict(identity or {})
        if anyres_layout not in LAYOUTS:
            raise ValueError(f"AnyRes layout must be one of {LAYOUTS}, got {anyres_layout!r}")
        self.anyres_layout = anyres_layout if self.anyres_grids else None
        if self.anyres_grids:  # recorded in scitune.json; a checkpoint without it predates llava-next (tiles)
            self.identity["vision"] = {**self.identity.get("vision", {}), "anyres_layout": anyres_layout}
        if self.anyres_layout == "llava-next":
            side = math.isqrt(self.num_image_tokens)
            if side * side != self.num_image_tokens:
                raise ValueError(
                    f"AnyRes (llava-next layout) needs a square feature map per tile, not {self.num_image_tokens} "
                    "tokens; use --model.vision.select patch and no prefix projector"
                )
            # LLaVA-NeXT's newline embedding, held by the connector so that it trains and is saved with it
            dim = llm.get_input_embeddings().embedding_dim
            like = next(projector.parameters(), llm.get_input_embeddings().weight)
            newline = torch.randn(dim, dtype=like.dtype, device=like.device) / math.sqrt(dim)
            self.projector.image_newline = nn.Parameter(newline)

    @property
    def image_newline(self) -> torch.Tensor | None:
        """The learned embedding after each row of an AnyRes image's feature map (llava-next layout), (D,)."""
        return getattr(self.projector, "image_newline", None)

    @property
    def num_image_tokens(self) -> int:
        """Image tokens of one encoder pass: of one image, or with AnyRes of one tile (or the overview)."""
        return int(getattr(self.projector, "num_tokens", 0) or self.vision.num_tokens)

    @property
    def context_length(self) -> int | None:
        """Tokens the LLM attends over (``max_position_embeddings``); None if its config does not say."""
        cfg = getattr(self.llm, "config", None)
        n = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        return int(n) if n else None

    @property
    def device(self) -> torch.device:
        return next(self.projector.parameters(), next(self.llm.parameters())).device

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images (n, C, H, W) -> projected features (n, N, D_llm)."""
        if any(p.requires_grad for p in self.vision.parameters()):
            feats = self.vision(pixel_values)
        else:
            with torch.no_grad():
                feats = self.vision(pixel_values)
        proj_dtype = next(self.projector.parameters(), feats).dtype
        return self.projector(feats.to(proj_dtype))

    def embed(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        image_grids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings with image features scattered into the image-token positions, (B, L, D).

        ``image_features`` are the vision encoder's outputs computed earlier (a feature cache), (n, N, D_vis);
        they replace ``pixel_values``. With AnyRes, ``pixel_values`` (or ``image_features``) holds every image's
        overview and tiles in order, (n_tiles, C, S, S), and ``image_grids`` (n_images, 4) each image's
        (rows, cols, height, width): checked against the tiles, and needed by the ``llava-next`` layout, which packs
        each image's features (`scitune.model.anyres.pack_llava_next`) before they are scattered.
        """
        embeds = self.llm.get_input_embeddings()(input_ids)
        is_image = input_ids == self.image_token_id
        n_slots = int(is_image.sum())
        given = image_features if image_features is not None else pixel_values
        n_inputs = 0 if given is None else int(given.shape[0])  # with AnyRes: encoder inputs (tiles + overviews)
        self._check_inputs(n_slots, n_inputs, image_grids)
        if n_inputs == 0:
            return embeds
        if image_features is not None:
            proj_dtype = next(self.projector.parameters(), image_features).dtype
            feats = self.projector(image_features.to(proj_dtype)).to(embeds.dtype)
        else:
            feats = self.encode_images(pixel_values).to(embeds.dtype)  # (n_inputs, N, D)
        if self.anyres_layout == "llava-next":
            feats = self._pack(feats, image_grids)  # (sum of counts, D)
        mask = is_image.unsqueeze(-1).expand_as(embeds)
        return embeds.masked_scatter(mask, feats.reshape(-1, feats.shape[-1]))

    def _check_inputs(self, n_slots: int, n_inputs: int, image_grids: torch.Tensor | None) -> None:
        """Raise ValueError unless the image inputs fill exactly the ``n_slots`` image-token positions."""
        if image_grids is not None and int((image_grids[:, :2].prod(-1) + 1).sum()) != n_inputs:
            need = int((image_grids[:, :2].prod(-1) + 1).sum())
            raise ValueError(
                f"image_grids {image_grids[:, :2].tolist()} need {need} tiles (rows*cols + 1 each) but {n_inputs} "
                "were given"
            )
        if self.anyres_layout != "llava-next" or not n_inputs:
            if n_slots != n_inputs * self.num_image_tokens:
                what = "tiles" if self.anyres_grids else "images"
                raise ValueError(
                    f"batch has {n_slots} image-token positions but {n_inputs} {what} x {self.num_image_tokens} "
                    "tokens each; expand every <image> at tokenization"
                )
            return
        if image_grids is None or image_grids.shape[-1] != 4:
            raise ValueError(
                "AnyRes (llava-next layout) packs each image's tiles by its grid and size: pass image_grids "
                "(n_images, 4) = (rows, cols, height, width), as the processor returns them"
            )
        counts = [self._llava_next_count(row) for row in image_grids.tolist()]
        if n_slots != sum(counts):
            raise ValueError(
                f"batch has {n_slots} image-token positions but its {len(counts)} images need {counts} tokens "
                "(llava-next layout); expand every <image> at tokenization"
            )

    def _llava_next_count(self, row: Sequence[int]) -> int:
        rows, cols, height, width = row
        return llava_next_token_count((width, height), (rows, cols), math.isqrt(self.num_image_tokens))

    def _pack(self, feats: torch.Tensor, image_grids: torch.Tensor) -> torch.Tensor:
        """Projected tiles (n_tiles, N, D) -> every image's llava-next sequence, concatenated (n_tokens, D)."""
        out, at = [], 0
        for rows, cols, height, width in image_grids.tolist():
            n = rows * cols + 1
            out.append(pack_llava_next(feats[at : at + n], (rows, cols), (width, height), self.image_newline))
            at += n
        return torch.cat(out)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        image_grids: torch.Tensor | None = None,
        **kwargs: Any,
    ):
        """Run the LLM on spliced embeddings; returns the LLM's output (``.logits`` of shape (B, L, V)).

        Packed rows pass ``position_ids`` restarting per sample and ``attention_mask=None``.
        """
        embeds = self.embed(input_ids, pixel_values, image_features, image_grids)
        return self.llm(
            inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False, **kwargs
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grids: torch.Tensor | None = None,
        **gen_kwargs: Any,
    ) -> torch.Tensor:
        """Generate from left-padded prompts; returns only the new token ids, (B, T)."""
        embeds = self.embed(input_ids, pixel_values, image_grids=image_grids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.llm.generate(inputs_embeds=embeds, attention_mask=attention_mask, **gen_kwargs)

    # ---- stages and freezing ----
    def parts(self) -> dict[str, nn.Module]:
        parts = {"vision": self.vision, "projector": self.projector, "llm": self.llm}
        if self.adapters is not None:
            parts["adapters"] = self.adapters
        return parts

    def parameter_counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for part, mod in self.parts().items():
            params = list(mod.parameters())
            out[part] = {
                "total": sum(p.numel() for p in params),
                "trainable": sum(p.numel() for p in params if p.requires_grad),
            }
        return out
