"""The evaluator's palette: the named colours a pixel of a world video can be read as, and the table that reads it.

The default palette is the default world's eight colours (:data:`~infinitystar.world.scenes.COLORS`). A video whose
prompt names a new colour (:data:`~infinitystar.world.scenes.NEW_COLORS`, e.g. pink) is read with that colour added,
and only then: every evaluation of a default-world prompt sees exactly the palette it always saw, so its figures stay
bit for bit what they were, and a new colour is recognised where it is asked for.

Why a module of its own: the palette is the one place where the evaluator's vocabulary can grow; the measurement
(:mod:`infinitystar.world.analysis`) takes it as a parameter.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from infinitystar.world.scenes import ALL_COLORS, COLORS, NEW_COLORS

__all__ = ["DEFAULT_PALETTE", "LUT_BITS", "palette_for", "palette_lut"]

#: the default world's colours, in their fixed order (palette index = position)
DEFAULT_PALETTE: tuple[str, ...] = tuple(COLORS)
LUT_BITS = 6  # colour lookup table resolution per channel: bins of 4 levels, at most 3.5 RGB units off


def palette_for(color: str | None) -> tuple[str, ...]:
    """The palette a video is read with: the default one, plus ``color`` when it is a new colour."""
    return DEFAULT_PALETTE + ((color,) if color in NEW_COLORS else ())


@lru_cache(maxsize=4)
def palette_lut(names: tuple[str, ...] = DEFAULT_PALETTE) -> tuple[np.ndarray, np.ndarray]:
    """Nearest palette colour (index into ``names``) and its squared distance for every 6-bit-per-channel RGB bin:
    ``[2^18]`` each.

    Computed once per palette; classifying a video is then one table lookup per pixel instead of one distance
    computation per palette colour.
    """
    palette = np.asarray([ALL_COLORS[c] for c in names], dtype=np.float32)  # [P, 3]
    step = 256 >> LUT_BITS
    levels = np.arange(0, 256, step, dtype=np.float32) + (step - 1) / 2  # bin centres
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")  # [L, L, L] each
    rgb = np.stack([r.ravel(), g.ravel(), b.ravel()], 1)  # [L^3, 3]
    dist2 = ((rgb[:, None, :] - palette[None]) ** 2).sum(-1)  # [L^3, P]
    nearest = dist2.argmin(1)
    return nearest.astype(np.int8), dist2[np.arange(nearest.size), nearest]
