"""AnyRes high-resolution tiling (LLaVA-NeXT): grid choice and tiles + overview (the processor cuts images with these;
the model checks its inputs with them)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image

Grid = tuple[int, int]
"""(rows, cols) of encoder-sized tiles."""


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


def select_grid(size: tuple[int, int], grids: Sequence[Grid], tile: int) -> Grid:
    """The grid whose canvas keeps the most of the image's resolution, then wastes the fewest pixels.

    LLaVA-NeXT's rule: the image (``size`` = (width, height)) is scaled to fit each canvas (cols*tile x
    rows*tile) keeping its aspect ratio; the effective resolution is the scaled pixel count, capped at the
    original's (upscaling adds nothing); the waste is the canvas area left over. Ties go to the earlier grid.
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
    """Image tokens of one AnyRes image: every tile plus the overview, each ``tokens_per_tile`` long."""
    return (grid[0] * grid[1] + 1) * tokens_per_tile


def fit_on_canvas(image: Image.Image, grid: Grid, tile: int, fill: tuple[int, int, int]) -> Image.Image:
    """Resize ``image`` (aspect kept) to fit the grid's canvas and centre it there; the rest is ``fill``."""
    cw, ch = grid[1] * tile, grid[0] * tile
    scale = min(cw / image.width, ch / image.height)
    w = min(cw, max(1, math.ceil(image.width * scale)))
    h = min(ch, max(1, math.ceil(image.height * scale)))
    canvas = Image.new("RGB", (cw, ch), fill)
    canvas.paste(image.convert("RGB").resize((w, h), Image.Resampling.BICUBIC), ((cw - w) // 2, (ch - h) // 2))
    return canvas


def split_tiles(image: Image.Image, grid: Grid, tile: int, fill: tuple[int, int, int]) -> list[Image.Image]:
    """The overview (whole image squeezed to tile x tile) first, then the grid's tiles row by row."""
    canvas = fit_on_canvas(image, grid, tile, fill)
    tiles = [image.convert("RGB").resize((tile, tile), Image.Resampling.BICUBIC)]
    for r in range(grid[0]):
        for c in range(grid[1]):
            tiles.append(canvas.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)))
    return tiles
