"""One decoding pass over a video: scene-cut scores and motion measurements on small frames.

Every decoded frame is downscaled (shorter side ``analysis_size``, 64 px by default) and compared with the one
before it. The cut score of frame ``i`` is the mean of two distances in [0, 1] to frame ``i - 1``:

- the total-variation distance of 64-bin joint RGB histograms (4 levels per channel): large when the colours of
  the picture change, insensitive to motion inside a shot;
- the mean absolute pixel difference / 255: catches cuts between shots with similar colours.

A hard cut between unrelated shots scores about 0.4-0.9, frames inside one shot about 0-0.15 (fast pans up to
about 0.25), so the default threshold is 0.3. Gradual transitions (fades, dissolves) are not detected as cuts;
the motion and black-frame filters catch most of their damage.

Motion is measured between frames on a fixed time grid (``motion_fps``, 8 per second by default) so a value
means the same thing for 24, 30 and 60 fps sources; pairs that straddle a cut are never used for a clip.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infinitystar.media.decode import frame_to_rgb, iter_video_frames


@dataclass
class VideoAnalysis:
    """Per-frame statistics of the frames ``[begin, end)`` of a video (``end`` is the decoded count there)."""

    begin: int
    end: int
    width: int
    height: int
    cut_scores: np.ndarray  # [end - begin] float32; entry i compares frame begin+i with begin+i-1 (0 for the first)
    motion_pairs: np.ndarray  # [M, 2] int64 frame indices (a, b), a < b, consecutive frames of the motion grid
    motion_values: np.ndarray  # [M] float64 motion of each pair

    def clip_motion(self, begin: int, end: int) -> float:
        """Mean motion of the grid pairs that lie inside ``[begin, end)``; NaN when there is none."""
        if len(self.motion_values) == 0:
            return math.nan
        inside = (self.motion_pairs[:, 0] >= begin) & (self.motion_pairs[:, 1] < end)
        return float(self.motion_values[inside].mean()) if inside.any() else math.nan


def colour_histogram(rgb: np.ndarray) -> np.ndarray:
    """Normalised 64-bin joint RGB histogram (4 levels per channel) of a uint8 ``[h, w, 3]`` frame."""
    q = rgb >> 6  # 0..3 per channel
    code = (q[..., 0].astype(np.int32) << 4) | (q[..., 1].astype(np.int32) << 2) | q[..., 2]
    hist = np.bincount(code.ravel(), minlength=64).astype(np.float64)
    return hist / hist.sum()


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of uint8 RGB ``[..., 3]`` as float32 in 0..255."""
    x = rgb.astype(np.float32)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def analyze_video(
    path: str | Path,
    fps: float,
    *,
    begin: int = 0,
    end: int | None = None,
    analysis_size: int = 64,
    motion: Callable[[np.ndarray, np.ndarray], float] | None = None,
    motion_fps: float = 8.0,
) -> VideoAnalysis:
    """Decode frames ``[begin, end)`` once and measure cut scores and motion (``motion(gray_a, gray_b)``).

    ``end=None`` reads to the end of the file; a file shorter than ``end`` just ends there (the returned ``end``
    is what was decoded). A corrupt stream raises ``MediaError``.
    """
    scores: list[float] = []
    pairs: list[tuple[int, int]] = []
    values: list[float] = []
    prev_rgb = prev_hist = None
    grid_prev: tuple[int, np.ndarray] | None = None
    last_slot = -1
    width = height = 0
    decoded_end = begin
    for index, frame in iter_video_frames(path, stop=end):
        if index < begin:
            continue
        width, height = frame.width, frame.height
        rgb = frame_to_rgb(frame, analysis_size)
        hist = colour_histogram(rgb)
        if prev_rgb is None or prev_rgb.shape != rgb.shape:
            scores.append(0.0)
        else:
            hist_distance = 0.5 * float(np.abs(hist - prev_hist).sum())
            pixel_distance = float(np.abs(rgb.astype(np.int16) - prev_rgb.astype(np.int16)).mean()) / 255.0
            scores.append(0.5 * (hist_distance + pixel_distance))
        prev_rgb, prev_hist = rgb, hist
        if motion is not None:
            slot = math.floor((index - begin) * motion_fps / fps + 1e-9)
            if slot > last_slot:
                last_slot = slot
                gray = luma(rgb)
                if grid_prev is not None and grid_prev[1].shape == gray.shape:
                    pairs.append((grid_prev[0], index))
                    values.append(float(motion(grid_prev[1], gray)))
                grid_prev = (index, gray)
        decoded_end = index + 1
    return VideoAnalysis(
        begin=begin,
        end=decoded_end,
        width=width,
        height=height,
        cut_scores=np.asarray(scores, dtype=np.float32),
        motion_pairs=np.asarray(pairs, dtype=np.int64).reshape(-1, 2),
        motion_values=np.asarray(values, dtype=np.float64),
    )


def detect_cuts(analysis: VideoAnalysis, fps: float, threshold: float, min_scene_duration: float) -> list[int]:
    """Frame indices where a new scene starts (cut score >= ``threshold``).

    A cut less than ``min_scene_duration`` seconds after the previous one (or after the start) is ignored, so a
    flash or a burst of fast motion does not shatter a shot into fragments.
    """
    min_gap = max(1, math.ceil(min_scene_duration * fps))
    cuts: list[int] = []
    last = analysis.begin
    for offset in np.flatnonzero(analysis.cut_scores >= threshold):
        index = analysis.begin + int(offset)
        if index - last >= min_gap:
            cuts.append(index)
            last = index
    return cuts


def split_scenes(begin: int, end: int, cuts: list[int]) -> list[tuple[int, int]]:
    """Scenes ``[(b, e), ...]`` covering ``[begin, end)`` split at ``cuts``."""
    bounds = [begin, *[c for c in cuts if begin < c < end], end]
    return [(b, e) for b, e in zip(bounds[:-1], bounds[1:]) if e > b]


def limit_length(scenes: list[tuple[int, int]], max_frames: int | None) -> list[tuple[int, int]]:
    """Cut scenes longer than ``max_frames`` into consecutive windows of ``max_frames`` (the rest is its own clip).

    Full-length windows keep the longest training duration; the remainder is kept or dropped by the duration
    filter like any clip.
    """
    if not max_frames:
        return list(scenes)
    out = []
    for b, e in scenes:
        while e - b > max_frames:
            out.append((b, b + max_frames))
            b += max_frames
        out.append((b, e))
    return out


def sample_indices(begin: int, end: int, count: int) -> list[int]:
    """``count`` frame indices spread evenly over ``[begin, end)`` (the centres of ``count`` equal parts)."""
    n = end - begin
    count = max(1, min(count, n))
    return [begin + int((k + 0.5) * n / count) for k in range(count)]
