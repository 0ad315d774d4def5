"""Exact tiled inference: each tile is run with a halo no smaller than the network's receptive radius, so the
stitched output equals the whole-image output (up to float rounding).

Tiles are cut on the LR grid; a tile's crop is the tile plus ``halo`` pixels on each side (clamped to the image, so
borders keep their zero padding exactly as in a whole-image run); only the tile's own output region is kept.
"""

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ScnetDeployError


@dataclass(frozen=True)
class Tile:
    y0: int
    y1: int
    x0: int
    x1: int  # the kept LR region
    cy0: int
    cy1: int
    cx0: int
    cx1: int  # the crop that is run


def plan_tiles(height: int, width: int, tile: int | None, halo: int) -> list[Tile]:
    if tile is None or (tile >= height and tile >= width):
        return [Tile(0, height, 0, width, 0, height, 0, width)]
    if tile < 1:
        raise ScnetDeployError(f"--tile must be at least 1 LR pixel, got {tile}.")
    tiles = []
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
            tiles.append(Tile(y0, y1, x0, x1, max(0, y0 - halo), min(height, y1 + halo), max(0, x0 - halo),
                              min(width, x1 + halo)))
    return tiles


def run_tiled(infer: Callable[[np.ndarray], np.ndarray], image: np.ndarray, scale: int, tile: int | None,
              halo: int, sink: Callable[[int, int, np.ndarray], None]) -> int:
    """Run ``infer`` (NCHW float -> NCHW float) over ``image`` (CHW) tile by tile; ``sink(y, x, block)`` receives each
    tile's output (CHW) at its HR offset. Returns the number of tiles."""
    _, h, w = image.shape
    tiles = plan_tiles(h, w, tile, halo)
    for t in tiles:
        crop = np.ascontiguousarray(image[None, :, t.cy0:t.cy1, t.cx0:t.cx1])
        out = infer(crop)[0]
        oy, ox = (t.y0 - t.cy0) * scale, (t.x0 - t.cx0) * scale
        sink(t.y0 * scale, t.x0 * scale, out[:, oy:oy + (t.y1 - t.y0) * scale, ox:ox + (t.x1 - t.x0) * scale])
    return len(tiles)


def upscale_float(infer, image: np.ndarray, scale: int, tile: int | None, halo: int) -> np.ndarray:
    """Tiled inference into one float32 CHW array (for tests and small images)."""
    c, h, w = image.shape
    out = np.empty((c, h * scale, w * scale), np.float32)

    def sink(y, x, block):
        out[:, y:y + block.shape[1], x:x + block.shape[2]] = block

    run_tiled(infer, image, scale, tile, halo, sink)
    return out


def tile_for(runner, height: int, width: int, halo: int, limit: int | None) -> int | None:
    """``auto_tile`` for ``runner``: its backend's bytes per LR pixel (the memory model) and its engine's max input."""
    from ..memory import bytes_per_lr_pixel

    return auto_tile(height, width, bytes_per_lr_pixel(runner.arch, runner.backend), halo, limit,
                     runner.size_range.max)


def auto_tile(height: int, width: int, bytes_per_px: int, halo: int, limit: int | None,
              max_crop: tuple[int, int] | None = None) -> int | None:
    """The largest tile whose crop fits ``limit`` bytes at ``bytes_per_px`` per LR pixel (``memory`` module) and an
    engine's max input; None = the whole image fits (or no limit is known)."""
    fits_engine = max_crop is None or (height <= max_crop[0] and width <= max_crop[1])
    if (limit is None or height * width * bytes_per_px <= limit) and fits_engine:
        return None
    side = int(math.isqrt(limit // bytes_per_px)) if limit is not None else max(height, width)
    if max_crop is not None:
        side = min(side, *max_crop)
    tile = side - 2 * halo
    if tile < 8:
        raise ScnetDeployError(f"a memory limit of {limit / 2**20:.0f} MB leaves tiles of {tile} px after a {halo} "
                               "px halo; raise --max-memory or free memory.")
    return tile


def run_within(runner, lr: np.ndarray, scale: int, limit: int | None) -> tuple[np.ndarray, int | None]:
    """The whole-image output of ``runner`` on ``lr`` (CHW), run in exact tiles where the memory model says the whole
    run would not fit ``limit`` (or the engine's size range); returns the output and the tile used (None: whole).
    A runner that replays outputs computed elsewhere (``holds_outputs``) is asked for the whole image."""
    if getattr(runner, "holds_outputs", False):
        return runner.infer(lr), None
    radius = runner.arch["receptive_radius"]
    tile = tile_for(runner, lr.shape[1], lr.shape[2], radius, limit)
    return (runner.infer(lr) if tile is None else upscale_float(runner.infer, lr, scale, tile, radius)), tile


def fixed_spans(length: int, size: int, halo: int) -> list[tuple[int, int, int]]:
    """(crop start, kept start, kept end) along one dimension for an engine whose input is exactly ``size`` pixels
    (a static-shape graph: Qualcomm's HTP): every crop lies inside the image and is ``size`` long, and keeps only
    what lies ``halo`` or more from its inner edges (an image edge keeps its zero padding), so stitching is exact.
    Crops overlap by at least twice the halo; the last is moved in to end at the image's edge."""
    if length < size:
        raise ScnetDeployError(f"an input {length} px long is smaller than this engine's fixed {size} px; re-export "
                               f"it with a size of at most {length} px, or run a larger image.")
    if length == size:
        return [(0, 0, size)]
    if size <= 2 * halo:
        raise ScnetDeployError(f"an engine fixed at {size} px leaves nothing exact to keep after a {halo} px halo on "
                               f"each side; re-export it at more than {2 * halo} px, or at exactly the input's size.")
    spans, kept = [], 0
    while kept < length:
        start = max(0, min(kept - halo, length - size))
        end = length if start + size == length else start + size - halo
        spans.append((start, kept, end))
        kept = end
    return spans


def run_fixed(infer: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, size: tuple[int, int], scale: int,
              halo: int) -> np.ndarray:
    """``infer`` of an engine fixed at ``size`` (height, width) over ``batch`` (NCHW, at least that size), in exact
    crops of exactly that size (``fixed_spans``); one crop where the input is that size."""
    n, c, h, w = batch.shape
    if (h, w) == tuple(size):
        return infer(batch)
    rows, cols = fixed_spans(h, size[0], halo), fixed_spans(w, size[1], halo)
    out = None
    for cy, ky0, ky1 in rows:
        for cx, kx0, kx1 in cols:
            block = infer(np.ascontiguousarray(batch[:, :, cy:cy + size[0], cx:cx + size[1]]))
            if out is None:
                out = np.empty((n, block.shape[1], h * scale, w * scale), block.dtype)
            oy, ox = (ky0 - cy) * scale, (kx0 - cx) * scale
            out[:, :, ky0 * scale:ky1 * scale, kx0 * scale:kx1 * scale] = \
                block[:, :, oy:oy + (ky1 - ky0) * scale, ox:ox + (kx1 - kx0) * scale]
    return out
