"""Sizes: frame rate, compression factors, resolution budgets and the aspect-ratio templates.

The released models work at 16 fps on a VAE that compresses 4x in time and 16x in space; a resolution is a
token budget (``0.40M`` = 480p, ``0.90M`` = 720p) whose spatial scale list depends on the aspect template
(the original's lists, reproduced exactly). Everything that turns durations, aspect ratios and budgets into frame
counts and pixel sizes is here; :mod:`.schedule` builds the scale pyramid on top of it."""

from __future__ import annotations

import math
from functools import cache

import numpy as np

# --------------------------------------------------------------------------------------
# Aspect-ratio templates (the original's spatial scale lists)
# --------------------------------------------------------------------------------------

#: "Scale" values s: the k-th spatial scale of a template has about s*s tokens.


# --------------------------------------------------------------------------------------
# Aspect-ratio templates (the original's spatial scale lists)
# --------------------------------------------------------------------------------------

#: "Scale" values s: the k-th spatial scale of a template has about s*s tokens.
BASE_SCALES: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 24, 32, 40, 60)
#: Base aspect ratios h/w (landscape and square); portrait templates are their transposes.
BASE_RATIOS: tuple[float, ...] = (1.0, 100 / 116, 3 / 4, 2 / 3, 9 / 16, 1 / 2, 2 / 5, 1 / 3)
#: Named pixel budgets: how many leading spatial scales a template uses.
#: "0.016M" (8 scales, 128x128 at 1:1) is this project's small CPU budget (the built-in model).
PN_NUM_SCALES: dict[str, int] = {"0.016M": 8, "0.06M": 11, "0.25M": 13, "0.40M": 14, "0.90M": 15}
#: Friendly resolution names.
RESOLUTIONS: dict[str, str] = {"480p": "0.40M", "720p": "0.90M"}
#: VAE compression: 4x in time (causal, first frame alone), 16x in space.
TEMPORAL_COMPRESSION = 4
SPATIAL_COMPRESSION = 16
FPS = 16


def _ratio_key(h: int, w: int) -> float:
    """The original's template key: h/w truncated to three decimals."""
    return int(h / w * 1000) / 1000


@cache
def aspect_templates() -> dict[float, tuple[tuple[int, int], ...]]:
    """The 15 aspect-ratio templates: key h/w (3 decimals) -> 15 spatial sizes (ph, pw).

    Sizes follow ``pw_f = sqrt(s^2 / r)``, ``ph = round(pw_f * r)``, ``pw = round(pw_f)`` with
    round-half-to-even; the key comes from the largest size; portrait keys are transposes.
    """
    templates: dict[float, tuple[tuple[int, int], ...]] = {}
    for r in BASE_RATIOS:
        hws = []
        for s in BASE_SCALES:
            pw_f = math.sqrt(s * s / r)
            hws.append((int(np.round(pw_f * r)), int(np.round(pw_f))))
        h, w = hws[-1]
        templates[_ratio_key(h, w)] = tuple(hws)
        templates[_ratio_key(w, h)] = tuple((b, a) for a, b in hws)
    return dict(sorted(templates.items()))


def nearest_template(h_div_w: float) -> float:
    """The template key nearest to an aspect ratio h/w (absolute difference, like the original)."""
    if not (isinstance(h_div_w, (int, float)) and math.isfinite(h_div_w) and h_div_w > 0):
        raise ValueError(f"aspect ratio h/w must be a positive finite number, got {h_div_w!r}")
    keys = list(aspect_templates())
    return min(keys, key=lambda k: abs(k - h_div_w))


def parse_aspect_ratio(aspect: str | float) -> float:
    """Turn "16:9", "9:16", "1:1" or a number (h/w) into h/w."""
    if isinstance(aspect, (int, float)):
        return float(aspect)
    text = str(aspect).strip()
    if ":" in text:
        a, _, b = text.partition(":")
        try:
            w, h = float(a), float(b)
        except ValueError:
            w = h = -1.0
        if w > 0 and h > 0:
            return h / w
        raise ValueError(f"aspect ratio must look like 'W:H' (e.g. '16:9'), got {aspect!r}")
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"aspect ratio must look like 'W:H' (e.g. '16:9') or be h/w, got {aspect!r}") from None


def spatial_scales(h_div_w: float, pn: str) -> list[tuple[int, int]]:
    """The (ph, pw) sizes of one pyramid for the template nearest ``h_div_w`` and budget ``pn``."""
    pn = RESOLUTIONS.get(pn, pn)
    if pn not in PN_NUM_SCALES:
        accepted = sorted(PN_NUM_SCALES) + sorted(RESOLUTIONS)
        raise ValueError(f"unknown resolution preset {pn!r}; accepted: {', '.join(accepted)}")
    return list(aspect_templates()[nearest_template(h_div_w)][: PN_NUM_SCALES[pn]])


def pixel_size(h_div_w: float, pn: str) -> tuple[int, int]:
    """Pixel (height, width) of a template at a budget: 16x its largest spatial scale."""
    ph, pw = spatial_scales(h_div_w, pn)[-1]
    return ph * SPATIAL_COMPRESSION, pw * SPATIAL_COMPRESSION


def latent_frames(num_frames: int) -> int:
    """Latent frames of a video of ``num_frames`` frames (valid counts are 1 + 4k)."""
    if num_frames < 1 or (num_frames - 1) % TEMPORAL_COMPRESSION:
        raise ValueError(f"a video must have 1 + 4k frames (1, 5, 9, ..., 81, ...), got {num_frames}")
    return (num_frames - 1) // TEMPORAL_COMPRESSION + 1


def video_frames_for_duration(seconds: float) -> int:
    """Frames of a ``seconds`` long video at 16 fps: 16 * seconds + 1 (5 s -> 81)."""
    frames = round(seconds * FPS)
    if seconds < 0 or abs(frames - seconds * FPS) > 1e-6 or frames % TEMPORAL_COMPRESSION:
        raise ValueError(f"duration must be a non-negative multiple of 0.25 s, got {seconds!r}")
    return frames + 1
