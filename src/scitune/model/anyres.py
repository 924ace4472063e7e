"""AnyRes high-resolution tiling (LLaVA-NeXT): grid choice, tiles + overview, and the ``llava-next`` feature layout
(the tiles' feature map with its padding cut off and a newline after each row). The processor cuts images and counts
tokens with these; the model packs features with `pack_llava_next`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from PIL import Image

Grid = tuple[int, int]
"""(rows, cols) of encoder-sized tiles."""

LAYOUTS = ("tiles", "llava-next")
"""How an AnyRes image's features are laid out in the text. ``tiles`` (the first scitune layout, kept for its
checkpoints): the overview's features, then every tile's, tile by tile. ``llava-next`` (LLaVA-NeXT's, the default):
the overview's features, then the tiles' features stitched into one map, the rows or columns that only cover the
canvas padding cut off, and a learned newline embedding after every row."""


def parse_grids(specs: Sequence[str]) -> tuple[Grid, ...]:
    """``["1x1", "1x2", "2x2"]`` -> ``((1, 1), (1, 2), (2, 2))``; each spec is ``ROWSxCOLS``.

    Raises:
        ValueError: naming ``--model.vision.anyres`` and the bad spec.
    """
    grids: list[Grid] = []
    for spec in specs:
        parts = str(spec).lower().split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"--model.vision.anyres: {spec!r} is not a grid like '2x3' (rows x cols, both >= 1)")
        grid = (int(parts[0]), int(parts[1]))
        if grid in grids:
            raise ValueError(f"--model.vision.anyres: grid {spec!r} is listed twice")
        grids.append(grid)
    return tuple(grids)


def format_grid(grid: Grid) -> str:
    return f"{grid[0]}x{grid[1]}"


def grid_pinpoints(grids: Sequence[Grid], tile: int) -> list[list[int]]:
    """scitune grids (rows, cols) of ``tile`` px tiles -> transformers' ``image_grid_pinpoints``: canvas sizes in
    pixels, each ``[height, width]`` = ``[rows * tile, cols * tile]``."""
    return [[rows * tile, cols * tile] for rows, cols in grids]


def grids_from_pinpoints(pinpoints: Sequence[Sequence[int]], tile: int) -> tuple[Grid, ...]:
    """transformers' ``image_grid_pinpoints`` ([height, width] pixels) -> scitune grids (rows, cols) of ``tile`` px.

    Raises:
        ValueError: a canvas side is not a multiple of the tile.
    """
    grids = []
    for height, width in pinpoints:
        if height % tile or width % tile or not height or not width:
            raise ValueError(f"grid pinpoint {[height, width]} is not a whole number of {tile} px tiles")
        grids.append((int(height) // tile, int(width) // tile))
    return tuple(grids)


def select_grid(size: tuple[int, int], grids: Sequence[Grid], tile: int) -> Grid:
    """The grid whose canvas keeps the most of the image's resolution, then wastes the fewest pixels.

    LLaVA-NeXT's rule (transformers' ``select_best_resolution`` on the pinpoints of `grid_pinpoints`): the image
    (``size`` = (width, height)) is scaled to fit each canvas (cols*tile x rows*tile) keeping its aspect ratio; the
    effective resolution is the scaled pixel count, capped at the original's (upscaling adds nothing); the waste is
    the canvas area left over. Ties go to the earlier grid.
    """
    if not grids:
        raise ValueError("select_grid needs at least one grid")
    width, height = size
    best, best_key = grids[0], None
    for rows, cols in grids:
        cw, ch = cols * tile, rows * tile
        scale = min(cw / width, ch / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        key = (effective, -(cw * ch - effective))
        if best_key is None or key > best_key:
            best, best_key = (rows, cols), key
    return best


def image_token_count(grid: Grid, tokens_per_tile: int) -> int:
    """Image tokens of one AnyRes image in the ``tiles`` layout: every tile plus the overview, each
    ``tokens_per_tile`` long."""
    return (grid[0] * grid[1] + 1) * tokens_per_tile


def unpadded_window(size: tuple[int, int], map_rows: int, map_cols: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The part of a tiled feature map that covers the image rather than the canvas padding around it.

    The image (``size`` = (width, height)) was fitted onto the canvas keeping its aspect ratio and centred, so
    padding lies either above and below it or left and right of it. Measured in map cells, the image spans
    ``floor(height * map_cols / width)`` rows when its width fills the map (and likewise for columns); what is left
    is split evenly, the odd cell staying in the map. This is LLaVA-NeXT's ``unpad_image`` in exact integer arithmetic.

    Returns:
        ``((top, bottom), (left, right))``: the rows ``top:bottom`` and columns ``left:right`` to keep.
    """
    width, height = size
    if width * map_rows > height * map_cols:  # wider than the map: padding above and below
        pad = (map_rows - height * map_cols // width) // 2
        return (pad, map_rows - pad), (0, map_cols)
    pad = (map_cols - width * map_rows // height) // 2
    return (0, map_rows), (pad, map_cols - pad)


def llava_next_token_count(size: tuple[int, int], grid: Grid, side: int) -> int:
    """Image tokens of an image of ``size`` = (width, height) tiled with ``grid`` in the ``llava-next`` layout, each
    tile (and the overview) a ``side x side`` feature map: the overview's ``side**2``, then every kept row of the
    stitched map followed by one newline."""
    (top, bottom), (left, right) = unpadded_window(size, grid[0] * side, grid[1] * side)
    return side * side + (bottom - top) * (right - left + 1)


def pack_llava_next(features: torch.Tensor, grid: Grid, size: tuple[int, int], newline: torch.Tensor) -> torch.Tensor:
    """One image's projected features in the ``llava-next`` layout.

    Args:
        features: (1 + rows*cols, side*side, D), the overview first, then the tiles row by row; each tile's tokens are
            its patches row by row.
        grid: (rows, cols).
        size: the original image's (width, height).
        newline: (D,), appended after every kept row of the stitched map.

    Returns:
        (side*side + kept_rows * (kept_cols + 1), D).
    """
    rows, cols = grid
    n, dim = features.shape[1], features.shape[2]
    side = math.isqrt(n)
    if side * side != n or features.shape[0] != rows * cols + 1:
        raise ValueError(f"llava-next packing needs 1 + {rows}x{cols} square feature maps, got {tuple(features.shape)}")
    # (rows, cols, side, side, D) -> (rows, side, cols, side, D) -> one (rows*side, cols*side, D) map
    stitched = features[1:].reshape(rows, cols, side, side, dim).permute(0, 2, 1, 3, 4).reshape(rows * side, -1, dim)
    (top, bottom), (left, right) = unpadded_window(size, rows * side, cols * side)
    kept = stitched[top:bottom, left:right]
    ends = newline.to(kept.dtype).expand(kept.shape[0], 1, dim)
    return torch.cat([features[0], torch.cat([kept, ends], dim=1).reshape(-1, dim)])


def fit_on_canvas(
    image: Image.Image,
    grid: Grid,
    tile: int,
    fill: tuple[int, int, int],
    resample: int = Image.Resampling.BICUBIC,
) -> Image.Image:
    """Resize ``image`` (aspect kept) to fit the grid's canvas and centre it there; the rest is ``fill``."""
    cw, ch = grid[1] * tile, grid[0] * tile
    scale = min(cw / image.width, ch / image.height)
    w = min(cw, max(1, math.ceil(image.width * scale)))
    h = min(ch, max(1, math.ceil(image.height * scale)))
    canvas = Image.new("RGB", (cw, ch), fill)
    canvas.paste(image.convert("RGB").resize((w, h), resample), ((cw - w) // 2, (ch - h) // 2))
    return canvas


def split_tiles(
    image: Image.Image,
    grid: Grid,
    tile: int,
    fill: tuple[int, int, int],
    resample: int = Image.Resampling.BICUBIC,
) -> list[Image.Image]:
    """The overview (whole image squeezed to tile x tile) first, then the grid's tiles row by row."""
    canvas = fit_on_canvas(image, grid, tile, fill, resample)
    tiles = [image.convert("RGB").resize((tile, tile), resample)]
    for r in range(grid[0]):
        for c in range(grid[1]):
            tiles.append(canvas.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)))
    return tiles
