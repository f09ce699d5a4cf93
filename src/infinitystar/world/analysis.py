"""Analytic reading of generated world videos and images: which background, colour, shape and motion they show.

The procedural world (:mod:`infinitystar.world.scenes`) is simple enough to be read back without any learned model.
For each video (and optionally the colour its prompt names) this module finds the object by colour, classifies its
shape and measures its motion. :mod:`infinitystar.world.evaluate` compares the result with the caption and averages
the flags into prompt-following accuracy; this module is the measurement alone, with no caption parsing, so it can
also describe videos that have no world prompt.

How, and why it tolerates generation noise:

1. Background: the per-channel median of the frame borders (all frames), so noise and a few stray pixels do not
   move it; reported as the nearest named background.
2. Colour: a pixel belongs to palette colour ``c`` when it is far enough from the measured background and ``c`` is
   its nearest palette colour within ``color_threshold``. Half-covered edge pixels and noise between two palette
   colours fall out instead of being mislabelled. The detected colour is the palette colour covering the most
   pixels over the video, counting only pixels in a patch of their colour (isolated noise pixels do not vote).
3. Object: per frame, the largest 4-connected component of the tracked colour (the named one when present, else
   the detected one), so speckles of that colour elsewhere do not drag the centroid or the shape.
4. Shape: the component is compared (IoU) with a circle, a square and an apex-up triangle of the same area placed
   at its centroid; the best fit wins in each frame and the majority over frames decides. Area-based fits barely
   notice blur, noise or a ragged edge, unlike corner or bounding-box features.
5. Motion: a least-squares line through the centroid track gives the displacement over the clip; below
   ``still_threshold`` of the frame the object is still, otherwise the dominant axis and sign name the motion.

For image-to-video, :func:`psnr` compares the first frame with the reference image.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from infinitystar.world.palette import DEFAULT_PALETTE, LUT_BITS, palette_for, palette_lut
from infinitystar.world.render import _signed_distance
from infinitystar.world.scenes import ALL_COLORS, BACKGROUNDS, SHAPES

__all__ = ["Analysis", "EvalConfig", "analyze", "psnr", "to_frames"]

_BACKGROUND_NAMES = tuple(BACKGROUNDS)
_BACKGROUND_RGB = np.asarray([BACKGROUNDS[b] for b in _BACKGROUND_NAMES], dtype=np.float32)  # [3, 3]


@dataclass(frozen=True)
class EvalConfig:
    """Thresholds of the evaluator (RGB distances on the 0-255 scale; areas and distances as frame fractions).

    The defaults are set well inside the margins of the world: palette colours are >= 117 apart, objects cover
    >= 1.6 % of the frame at the smallest size range recipes use (a side of 18 %; the default world's is 34 %), and
    moving objects travel >= 22 % of it while still ones move 0 %.
    """

    background_threshold: float = 60.0  #: a pixel this close to the measured background is background
    color_threshold: float = 90.0  #: a pixel further than this from every palette colour has no colour
    min_area: float = 0.003  #: smallest object, as a fraction of the frame's pixels, that counts as present
    min_present: float = 0.5  #: the named colour must be present in at least this fraction of the frames
    still_threshold: float = 0.10  #: displacement over the clip (fraction of the frame) below which it is still
    border: int = 2  #: width in pixels of the frame border that measures the background

    def __post_init__(self) -> None:
        for name in ("background_threshold", "color_threshold"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("min_area", "min_present", "still_threshold"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.border < 1:
            raise ValueError(f"border must be at least 1 pixel, got {self.border}")


# ----------------------------------------------------------------------------------------------------------------------
# Input normalisation


def to_frames(video, name: str = "video") -> np.ndarray:
    """Any accepted video or image as float32 ``[T, H, W, 3]`` on the 0-255 scale.

    Accepted: a numpy array or torch tensor shaped ``[T, H, W, 3]`` (``write_video``'s layout), ``[3, T, H, W]`` (the
    VAE's layout without batch), ``[H, W, 3]`` or ``[3, H, W]`` (an image); uint8 (or other integers) on 0-255, or
    floating point on the VAE's ``[-1, 1]`` scale (clamped, as decoders overshoot slightly).
    """
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu()
        video = video.float().numpy() if video.is_floating_point() else video.numpy()
    if not isinstance(video, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(video).__name__}")
    shape = video.shape
    if video.ndim == 3:
        video = video[None] if shape[-1] == 3 else video[:, None] if shape[0] == 3 else None  # -> 4-D
    if video is None or video.ndim != 4:
        raise ValueError(
            f"{name} has shape {tuple(shape)}; accepted: [T, H, W, 3], [3, T, H, W], [H, W, 3] or [3, H, W]"
        )
    if video.shape[-1] != 3:
        if video.shape[0] != 3:
            raise ValueError(
                f"{name} has shape {tuple(shape)}: no axis of 3 colour channels first or last; "
                "accepted: [T, H, W, 3], [3, T, H, W], [H, W, 3] or [3, H, W]"
            )
        video = np.moveaxis(video, 0, -1)  # [3, T, H, W] -> [T, H, W, 3]
    t, h, w, _ = video.shape
    if t < 1 or h < 8 or w < 8:
        raise ValueError(f"{name} is empty or tiny ({t} frames of {h}x{w}); need at least 1 frame of 8x8 pixels")
    if video.dtype == np.bool_ or not np.issubdtype(video.dtype, np.number):
        raise ValueError(f"{name} has dtype {video.dtype}; accepted: uint8 (0-255) or floating point ([-1, 1])")
    if np.issubdtype(video.dtype, np.floating):
        if not np.isfinite(video).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        lo, hi = float(video.min()), float(video.max())
        if lo < -1.5 or hi > 1.5:
            raise ValueError(
                f"floating-point {name} must be on the [-1, 1] scale (values {lo:.3g}..{hi:.3g}); "
                "pass uint8 for 0-255 values"
            )
        return ((np.clip(video, -1.0, 1.0) + 1.0) * 127.5).astype(np.float32)
    lo, hi = int(video.min()), int(video.max())
    if lo < 0 or hi > 255:
        raise ValueError(f"integer {name} must hold 0-255 values, got {lo}..{hi}")
    return video.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------------
# Pieces


def psnr(a, b, name: str = "first frame") -> float:
    """PSNR in dB between two images or videos of the same shape (0-255 scale); ``inf`` when identical."""
    return _psnr(to_frames(a, name), to_frames(b, "reference"), name)


def _psnr(x: np.ndarray, y: np.ndarray, name: str) -> float:
    """PSNR of two float ``[T, H, W, 3]`` arrays on the 0-255 scale."""
    from infinitystar.evaluation.metrics import psnr

    if x.shape != y.shape:
        raise ValueError(
            f"{name} {x.shape[1:3]} and reference {y.shape[1:3]} differ in size (or frame count {x.shape[0]} vs "
            f"{y.shape[0]})"
        )
    return psnr(x, y)


def _measure_background(frames: np.ndarray, border: int) -> np.ndarray:
    """Per-channel median of the border pixels of every frame: ``[3]``."""
    b = min(border, frames.shape[1] // 4, frames.shape[2] // 4) or 1
    rim = np.concatenate(
        [
            frames[:, :b].reshape(-1, 3),
            frames[:, -b:].reshape(-1, 3),
            frames[:, b:-b, :b].reshape(-1, 3),
            frames[:, b:-b, -b:].reshape(-1, 3),
        ]
    )
    return np.median(rim, axis=0)


def _color_labels(
    frames: np.ndarray, background: np.ndarray, config: EvalConfig, names: tuple[str, ...] = DEFAULT_PALETTE
) -> np.ndarray:
    """Index into the palette ``names`` of every pixel, -1 for background and colourless pixels: int8 ``[T, H, W]``."""
    nearest_lut, dist2_lut = palette_lut(names)
    q = np.rint(frames).astype(np.int32) >> (8 - LUT_BITS)  # [T, H, W, 3] bin per channel
    index = (q[..., 0] << (2 * LUT_BITS)) | (q[..., 1] << LUT_BITS) | q[..., 2]  # [T, H, W]
    diff = frames - background
    bg_d2 = (diff * diff).sum(-1)  # [T, H, W]
    keep = (dist2_lut[index] <= config.color_threshold**2) & (bg_d2 > config.background_threshold**2)
    return np.where(keep, nearest_lut[index], -1).astype(np.int8)


def _solid(labels: np.ndarray, min_same: int = 4) -> np.ndarray:
    """Coloured pixels with at least ``min_same`` of their 8 neighbours of the same colour: bool ``[T, H, W]``.

    Noise scatters isolated pixels of every colour over the background; across a whole frame they can outnumber
    the object's pixels, but they almost never come in patches. Pixels on an object's straight edge have 5 such
    neighbours, inside it 8, so the object keeps (nearly) all of its pixels.
    """
    t, h, w = labels.shape
    padded = np.pad(labels, ((0, 0), (1, 1), (1, 1)), constant_values=-1)  # [T, H + 2, W + 2]
    same = np.zeros(labels.shape, dtype=np.int8)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if (dy, dx) != (1, 1):
                same += padded[:, dy : dy + h, dx : dx + w] == labels
    return (labels >= 0) & (same >= min_same)


def _largest_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest 4-connected component of each frame of ``mask`` ``[T, H, W]``: (component mask, areas ``[T]``).

    Label propagation in numpy: every pixel repeatedly takes the smallest label among itself and its neighbours,
    with pointer jumping (a pixel adopts its label's label) so it converges in a few dozen vectorised passes.
    Components never cross frames because only H and W neighbours are used.
    """
    rows = np.flatnonzero(mask.any((0, 2)))
    cols = np.flatnonzero(mask.any((0, 1)))
    if rows.size and (rows[-1] - rows[0] + 1 < mask.shape[1] or cols[-1] - cols[0] + 1 < mask.shape[2]):
        # work on the bounding box of the mask over all frames (the object's path), then paste back
        box = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        inner, areas = _largest_components(mask[box])
        component = np.zeros_like(mask)
        component[box] = inner
        return component, areas
    t, h, w = mask.shape
    n = t * h * w
    empty = n  # label of non-mask pixels, larger than any pixel index
    labels = np.where(mask, np.arange(n, dtype=np.int64).reshape(t, h, w), empty)
    lookup = np.empty(n + 1, dtype=np.int64)
    while True:
        new = labels.copy()
        np.minimum(new[:, 1:], labels[:, :-1], out=new[:, 1:])
        np.minimum(new[:, :-1], labels[:, 1:], out=new[:, :-1])
        np.minimum(new[:, :, 1:], labels[:, :, :-1], out=new[:, :, 1:])
        np.minimum(new[:, :, :-1], labels[:, :, 1:], out=new[:, :, :-1])
        new[~mask] = empty
        for _ in range(2):  # pointer jumping
            lookup[:n] = new.ravel()
            lookup[n] = empty
            new = lookup[new]
        if np.array_equal(new, labels):
            break
        labels = new
    counts = np.bincount(labels[mask], minlength=n)[:n].reshape(t, h * w)  # [T, H*W] pixels per label
    best = counts.argmax(1)  # [T] label (offset within its frame) of the largest component
    areas = counts[np.arange(t), best]
    best_global = best + np.arange(t) * h * w
    component = mask & (labels == best_global[:, None, None])
    return component, areas


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """Binary dilation of ``[H, W]`` by ``steps`` pixels (8-neighbourhood)."""
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= grown[:, :-1].copy()
        grown[:, :-1] |= grown[:, 1:].copy()
        out = grown
    return out


def _soft_coverage(frame: np.ndarray, component: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Estimated object coverage in [0, 1] of every pixel near ``component`` (0 elsewhere): ``[H, W]``.

    Each pixel near the object is modelled as ``background + a * (object - background)`` and ``a`` is its projection
    on that line; the object's colour is the median of its component. Blur, antialiasing and chroma subsampling move
    coverage between neighbouring pixels but keep its sum and centre, so shapes fitted to it stay unbiased.
    """
    color = np.median(frame[component], axis=0)  # [3]
    axis = color - background
    norm2 = float(axis @ axis)
    if norm2 < 1.0:
        return component.astype(np.float32)
    near = _dilate(component, 2)
    alpha = np.clip(((frame - background) @ axis) / norm2, 0.0, 1.0)  # [H, W]
    return np.where(near, alpha, 0.0).astype(np.float32)


def _shape_scores(frames: np.ndarray, component: np.ndarray, present: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Soft IoU of each frame's object with a same-area circle, square and triangle at its centroid: ``[T, 3]``.

    Area and centroid come from the soft coverage (:func:`_soft_coverage`); each template is rendered with the same
    one-pixel antialiasing as the world, and IoU is ``sum(min) / sum(max)`` of the two coverages.
    """
    t, h, w = component.shape
    scores = np.zeros((t, len(SHAPES)), dtype=np.float64)
    ys = np.arange(h, dtype=np.float64)[:, None] + 0.5  # [H, 1]
    xs = np.arange(w, dtype=np.float64)[None, :] + 0.5  # [1, W]
    for f in np.flatnonzero(present):
        alpha = _soft_coverage(frames[f], component[f], background).astype(np.float64)  # [H, W]
        area = alpha.sum()
        if area <= 0:
            continue
        cy, cx = (alpha * ys).sum() / area, (alpha * xs).sum() / area
        for k, shape in enumerate(SHAPES):
            if shape == "circle":
                side, box_cy = 2 * math.sqrt(area / math.pi), cy
            elif shape == "square":
                side, box_cy = math.sqrt(area), cy
            else:  # apex-up triangle: its centroid lies side / 6 below its bounding-box centre
                side = math.sqrt(2 * area)
                box_cy = cy - side / 6
            template = np.clip(0.5 - _signed_distance(shape, xs - cx, ys - box_cy, side), 0.0, 1.0)  # [H, W]
            scores[f, k] = np.minimum(template, alpha).sum() / np.maximum(template, alpha).sum()
    return scores


def _motion_name(dx: float, dy: float, still: float) -> str:
    if max(abs(dx), abs(dy)) < still:
        return "staying still"
    if abs(dx) >= abs(dy):
        return "moving right" if dx > 0 else "moving left"
    return "moving down" if dy > 0 else "moving up"


# ----------------------------------------------------------------------------------------------------------------------
# Analysis of one video (no prompt needed)


@dataclass
class Analysis:
    """What the evaluator sees in a video, independent of any prompt.

    ``color`` is the palette colour covering the most pixels in patches of that colour (``None`` when no object is
    found; ``color_areas`` has those pixel counts as fractions of all pixels of the video); ``tracked_color``
    the colour whose largest component was tracked for shape and motion; ``track`` the per-frame centroid ``(x, y)``
    in frame fractions, ``None`` where the object is absent; ``displacement`` the fitted ``(dx, dy)`` over the clip
    in frame fractions; ``shape_scores`` the mean IoU per shape over the frames where the object is present.
    """

    frames: int
    background_rgb: tuple[float, float, float]
    background: str
    color: str | None
    color_areas: dict[str, float]
    tracked_color: str | None
    present_frames: int
    shape: str | None
    shape_scores: dict[str, float]
    motion: str | None
    displacement: tuple[float, float] | None
    track: list[tuple[float, float] | None] = field(repr=False)


def analyze(video, color: str | None = None, config: EvalConfig | None = None) -> Analysis:
    """Find the object in ``video`` (any layout :func:`to_frames` accepts) and measure its colour, shape and motion.

    ``color`` names the colour to track (a prompt's colour); when it is absent from the video (or ``None``), the
    dominant colour is tracked instead, so shape and motion are still measured on whatever object is there. A new
    colour (``"pink"``) is added to the palette the video is read with (:func:`.palette.palette_for`).
    """
    if color is not None and color not in ALL_COLORS:
        raise ValueError(f"unknown color {color!r}; accepted: {', '.join(ALL_COLORS)}")
    return _analyze_frames(to_frames(video), color, config or EvalConfig())


def _analyze_frames(frames: np.ndarray, color: str | None, config: EvalConfig) -> Analysis:
    """:func:`analyze` on float32 ``[T, H, W, 3]`` frames on the 0-255 scale (the report converts them only once)."""
    t, h, w, _ = frames.shape
    min_pixels = max(1.0, config.min_area * h * w)
    names = palette_for(color)
    background_rgb = _measure_background(frames, config.border)  # [3]
    labels = _color_labels(frames, background_rgb, config, names)  # [T, H, W]
    color_areas, detected = _dominant_color(labels, min_pixels, names)
    tracked, component, present = _pick_object(labels, color, detected, min_pixels, config.min_present, names)
    shape, shape_scores, track, motion, displacement = None, dict.fromkeys(SHAPES, 0.0), [None] * t, None, None
    if tracked is not None:
        scores = _shape_scores(frames, component, present, background_rgb)  # [T, 3]
        shape, shape_scores = _vote_shape(scores[present])
        track = _centroid_track(component, present)
        motion, displacement = _fit_motion(track, present, config)
    return Analysis(
        frames=t,
        background_rgb=tuple(float(v) for v in background_rgb),
        background=_BACKGROUND_NAMES[int(((_BACKGROUND_RGB - background_rgb) ** 2).sum(-1).argmin())],
        color=detected,
        color_areas=color_areas,
        tracked_color=tracked,
        present_frames=int(present.sum()),
        shape=shape,
        shape_scores=shape_scores,
        motion=motion,
        displacement=displacement,
        track=track,
    )


def _dominant_color(
    labels: np.ndarray, min_pixels: float, names: tuple[str, ...] = DEFAULT_PALETTE
) -> tuple[dict[str, float], str | None]:
    """Area of each palette colour (fraction of all pixels) and the colour covering the most (``None`` below
    ``min_pixels`` per frame), counting only pixels in patches so that scattered noise cannot outvote the object."""
    t, h, w = labels.shape
    solid = labels[_solid(labels)].astype(np.int64)  # colour pixels inside a patch of their colour
    counts = np.bincount(solid, minlength=len(names))  # [P]
    color_areas = {c: float(counts[k]) / (t * h * w) for k, c in enumerate(names)}
    dominant = int(counts.argmax())
    return color_areas, names[dominant] if counts[dominant] / t >= min_pixels else None


def _pick_object(
    labels: np.ndarray,
    color: str | None,
    detected: str | None,
    min_pixels: float,
    min_present: float,
    names: tuple[str, ...] = DEFAULT_PALETTE,
) -> tuple[str | None, np.ndarray | None, np.ndarray]:
    """Colour to track (``None``: no object in any frame), its largest component ``[T, H, W]`` and where it counts
    ``[T]``: the named ``color`` if present often enough, else the dominant one, so shape and motion are measured."""

    def largest(name: str) -> tuple[np.ndarray, np.ndarray]:  # component [T, H, W], big enough to count [T]
        component, areas = _largest_components(labels == names.index(name))
        return component, areas >= min_pixels

    tracked, component, present = None, None, np.zeros(labels.shape[0], dtype=bool)
    if color is not None:
        component, present = largest(color)
        tracked = color
    if (tracked is None or present.mean() < min_present) and detected is not None and detected != color:
        component, present = largest(detected)
        tracked = detected
    return (tracked if present.any() else None), component, present


def _vote_shape(scores: np.ndarray) -> tuple[str, dict[str, float]]:
    """The shape winning most frames of ``scores`` ``[N, 3]`` (ties: higher mean IoU) and the mean IoUs: a majority
    ignores the few frames where blur or noise made another template fit better."""
    votes = Counter(int(k) for k in scores.argmax(1))
    mean_scores = scores.mean(0)  # [3]
    best_votes = max(votes.values())
    shape = SHAPES[max((k for k, v in votes.items() if v == best_votes), key=lambda k: mean_scores[k])]
    return shape, {s: float(mean_scores[k]) for k, s in enumerate(SHAPES)}


def _centroid_track(component: np.ndarray, present: np.ndarray) -> list[tuple[float, float] | None]:
    """Centroid ``(x, y)`` of ``component`` ``[T, H, W]`` in frame fractions per frame; ``None`` where not present."""
    t, h, w = component.shape
    ys = np.arange(h, dtype=np.float64) + 0.5
    xs = np.arange(w, dtype=np.float64) + 0.5
    track: list[tuple[float, float] | None] = [None] * t
    for f in np.flatnonzero(present):
        rows, cols = np.nonzero(component[f])
        track[f] = (float(xs[cols].mean() / w), float(ys[rows].mean() / h))
    return track


def _fit_motion(track: list, present: np.ndarray, config: EvalConfig) -> tuple[str | None, tuple[float, float] | None]:
    """Motion and displacement ``(dx, dy)`` over the clip (frame fractions) of a least-squares line through the
    centroids, so no single noisy frame decides; ``(None, None)`` when seen in too few frames (or one frame)."""
    t = len(track)
    seen = np.flatnonzero(present)
    if t <= 1 or seen.size < max(2, math.ceil(config.min_present * t)):
        return None, None
    pts = np.asarray([track[f] for f in seen])  # [N, 2]
    slope = np.polyfit(seen.astype(np.float64), pts, 1)[0]  # [2] frame fractions per frame
    displacement = (float(slope[0] * (t - 1)), float(slope[1] * (t - 1)))
    return _motion_name(*displacement, config.still_threshold), displacement
