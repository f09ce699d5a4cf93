"""Resampling in time (which source frames make a 16 fps clip) and in space (cover-resize and crop, short-edge
scaling). No torch: the decoders in :mod:`.decode` use these, and curation workers import those."""

from __future__ import annotations

import math

import numpy as np

from infinitystar.sizes import FPS


def resample_indices(
    num_source: int, source_fps: float, num_frames: int, start_frame: int = 0, *, original: bool = False
) -> list[int]:
    """Source frame indices of ``num_frames`` frames on a 16 fps grid (nearest lower frame;
    duplicates when the source is slower than 16 fps).

    ``original=True`` uses the original training reader's formula, ``linspace(ceil(fps*start),
    min(ceil(fps*end), N) - 1, n)``, which spreads the frames over one source frame less than
    the clip spans (a 16 fps source gives 0, 0, 1, 2, 3 for 5 frames).
    """
    if original:
        start = start_frame / source_fps
        end = start + (num_frames - 1) / FPS
        first = math.ceil(source_fps * start)
        last = min(math.ceil(source_fps * end), num_source) - 1
        return [int(v) for v in np.linspace(first, last, num_frames)]
    step = source_fps / FPS
    return [min(start_frame + int(i * step + 1e-9), num_source - 1) for i in range(num_frames)]


def cover_resize_crop(image, height: int, width: int):
    """Resize a PIL image with Lanczos so that it covers ``height x width`` (keeping its aspect),
    then crop the center: the original's preprocessing, without its rare 1-pixel-short bug
    (it truncated the covering size with ``int()``; here it is rounded up)."""
    from PIL import Image

    w0, h0 = image.size
    scale = max(height / h0, width / w0)
    new_w, new_h = max(width, math.ceil(w0 * scale - 1e-6)), max(height, math.ceil(h0 * scale - 1e-6))
    image = image.resize((new_w, new_h), Image.LANCZOS)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    return image.crop((left, top, left + width, top + height))


def scaled_size(width: int, height: int, short_edge: int) -> tuple[int, int]:
    """``(w, h)`` with the shorter side at ``short_edge`` (never upscaled), aspect kept, at least 1 pixel."""
    scale = min(1.0, short_edge / min(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))
