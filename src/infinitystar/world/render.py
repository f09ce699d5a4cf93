"""Rendering of the procedural world: a :class:`~infinitystar.world.scenes.Scene` to uint8 RGB frames.

Rendering is a pure numpy function of the scene, so the same scene gives the same bytes on every machine. Edges are
antialiased over one pixel from a signed distance to the shape, which the evaluator (:mod:`infinitystar.world.analysis`)
reuses to draw the templates it fits, so a rendered object matches its template exactly.

Why a module of its own: it is the only numerically heavy part of the world and the only one that depends on pixel
sizes; scenes and captions stay resolution-free, and the evaluator can import the shape geometry without the
dataset or file writing.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from infinitystar.sizes import FPS
from infinitystar.world.scenes import ALL_COLORS, BACKGROUNDS, Scene, _check_frames, _frame_hw

__all__ = ["render"]


def _signed_distance(shape: str, dx: np.ndarray, dy: np.ndarray, side: float) -> np.ndarray:
    """Signed distance in pixels (negative inside) from the bounding-box centre offsets ``dx, dy``.

    Exact inside and along edges; an approximation outside corners, which only affects the one-pixel antialiased rim.
    """
    half = side / 2
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - half
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) - half
    # triangle: apex (0, -half), base corners (+-half, half); two slanted edges with outward normals (+-2, -1) / sqrt 5
    slant = (2 * np.abs(dx) - dy - half) / math.sqrt(5)
    return np.maximum(dy - half, slant)


def render(scene: Scene, frames: int | None = None, size: int | tuple[int, int] = 128) -> torch.Tensor:
    """Render ``scene`` as uint8 frames ``[T, H, W, 3]`` (RGB).

    ``frames`` defaults to 17 for a video scene and 1 for an image scene (1 + 4k in any case); ``size`` is an int or
    ``(height, width)``, multiples of 16. Edges are antialiased over one pixel (coverage from the signed distance);
    pixels fully inside the object have exactly its palette colour and the rest exactly the background colour.
    Vectorised numpy over all frames at once.
    """
    if not isinstance(scene, Scene):
        raise TypeError(f"scene must be a Scene, got {type(scene).__name__}")
    frames = (1 if scene.is_image else 17) if frames is None else _check_frames(frames)
    h, w = _frame_hw(size)
    side = scene.size * min(h, w)  # object side in pixels
    cx, cy = scene.center(np.arange(frames) / FPS)  # [T] each, frame fractions
    cx, cy = np.asarray(cx, dtype=np.float64) * w, np.asarray(cy, dtype=np.float64) * h  # [T] pixels
    fg = np.asarray(ALL_COLORS[scene.color], dtype=np.float32)
    bg = np.asarray(BACKGROUNDS[scene.background], dtype=np.uint8)
    # Only a crop around the object changes: every frame's crop has the same size (the object's box plus a one-pixel
    # rim), so all crops are computed at once and scattered into a padded canvas (crops may hang over the edges).
    crop = math.ceil(side) + 3
    x0 = np.clip(np.floor(cx - side / 2).astype(np.int64) - 1, -crop, w)  # [T] crop origins
    y0 = np.clip(np.floor(cy - side / 2).astype(np.int64) - 1, -crop, h)
    xs = x0[:, None] + np.arange(crop)  # [T, crop] pixel columns
    ys = y0[:, None] + np.arange(crop)  # [T, crop] pixel rows
    dx = (xs + 0.5 - cx[:, None]).astype(np.float32)[:, None, :]  # [T, 1, crop]
    dy = (ys + 0.5 - cy[:, None]).astype(np.float32)[:, :, None]  # [T, crop, 1]
    dx, dy = np.broadcast_arrays(dx, dy)  # [T, crop, crop] each
    coverage = np.clip(0.5 - _signed_distance(scene.shape, dx, dy, side), 0.0, 1.0)  # [T, crop, crop]
    patch = np.rint(bg + coverage[..., None] * (fg - bg)).astype(np.uint8)  # [T, crop, crop, 3]
    canvas = np.empty((frames, h + 2 * crop, w + 2 * crop, 3), dtype=np.uint8)  # [T, H + 2c, W + 2c, 3]
    # filling row by row is memcpy-fast; broadcasting a 3-vector over the whole canvas is ~30x slower
    canvas.reshape(-1, (w + 2 * crop) * 3)[:] = np.tile(bg, w + 2 * crop)  # [T * (H + 2c), (W + 2c) * 3]
    for t in range(frames):  # T slice copies: far cheaper than one fancy-indexed scatter
        canvas[t, y0[t] + crop : y0[t] + 2 * crop, x0[t] + crop : x0[t] + 2 * crop] = patch[t]
    video = np.ascontiguousarray(canvas[:, crop : crop + h, crop : crop + w])  # [T, H, W, 3]
    return torch.from_numpy(video)
