"""Curation settings (every threshold, with its default and why) and the metadata and motion filters.

The InfinityStar paper and code release give no numeric data filters (the reference lists none), so the defaults
below are documented choices, each tied to how the model consumes data:

============================  =========  ==========================================================================
setting                       default    why
============================  =========  ==========================================================================
``min_duration``              2.0 s      training maps a clip to ``int(seconds)`` (1 s -> 17 frames); 2 s leaves
                                         room for the scene-cut trim and keeps clips with some action
``max_clip_duration``         10.0 s     the longest duration the model trains on (480p, 161 frames); longer
                                         scenes are cut into 10 s windows (0 keeps scenes whole)
``min_fps``                   16         the model samples 16 fps; slower sources would repeat frames
``min_short_edge``            480        the 480p model's shorter side; smaller sources would be upscaled
``scene_threshold``           0.3        see ``scenes``: hard cuts score 0.4-0.9, frames inside a shot < 0.25
``min_scene_duration``        0.5 s      cuts closer than this to the previous one are ignored (flashes)
``motion``                    auto       optical flow (OpenCV Farneback) when ``opencv-python-headless`` is
                                         installed (extra ``curate``), else frame differences in numpy
``min_motion`` (diff)         0.003      mean |grey difference| / 255 between frames 1/8 s apart: a still or
                                         frozen clip measures ~0.000-0.002 after compression
``min_motion`` (flow)         0.001      mean flow magnitude per 1/8 s as a fraction of the frame's shorter side
``sample_frames``             8          frames per clip given to the scorers (spread evenly)
``sample_size``               256        shorter side of those frames
scorers                       brightness >= 0.1, black_frames <= 0.5, blur >= 15 (see ``scorers``)
============================  =========  ==========================================================================
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from infinitystar.curate.captioner import CaptionerSpec
from infinitystar.curate.scorers import DEFAULT_SCORERS, ScorerSpec
from infinitystar.media.probe import MediaInfo

MOTION_METHODS = ("auto", "flow", "diff", "off")
DEFAULT_MIN_MOTION = {"diff": 0.003, "flow": 0.001}


@dataclass(frozen=True)
class CurateConfig:
    """Everything that decides what a curation run keeps and writes (stored in the resume state: a resumed run
    must use the same settings). Runtime options (workers, resume, item limits) are not part of it."""

    min_duration: float = 2.0
    max_clip_duration: float = 10.0
    min_fps: float = 16.0
    max_fps: float | None = None
    min_short_edge: int = 480
    split_scenes: bool = True
    scene_threshold: float = 0.3
    min_scene_duration: float = 0.5
    analysis_size: int = 64
    motion: str = "auto"
    min_motion: float | None = None
    max_motion: float | None = None
    motion_fps: float = 8.0
    scorers: tuple[ScorerSpec, ...] = field(default_factory=lambda: tuple(ScorerSpec(n) for n in DEFAULT_SCORERS))
    sample_frames: int = 8
    sample_size: int = 256
    captioner: CaptionerSpec | None = None
    recaption: bool = False
    sidecar_captions: bool = True

    def __post_init__(self) -> None:
        positive = {
            "min_duration": self.min_duration,
            "min_fps": self.min_fps,
            "scene_threshold": self.scene_threshold,
            "analysis_size": self.analysis_size,
            "motion_fps": self.motion_fps,
            "sample_frames": self.sample_frames,
            "sample_size": self.sample_size,
        }
        for name, value in positive.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number; got {value!r}")
        non_negative = {
            "max_clip_duration": self.max_clip_duration,
            "min_short_edge": self.min_short_edge,
            "min_scene_duration": self.min_scene_duration,
        }
        for name, value in non_negative.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0; got {value!r}")
        if self.max_clip_duration and self.max_clip_duration < self.min_duration:
            raise ValueError(
                f"max_clip_duration ({self.max_clip_duration}) must be 0 (no limit) or >= min_duration "
                f"({self.min_duration})"
            )
        if self.max_fps is not None and self.max_fps < self.min_fps:
            raise ValueError(f"max_fps ({self.max_fps}) must be >= min_fps ({self.min_fps})")
        if self.motion not in MOTION_METHODS:
            raise ValueError(f"motion must be one of {', '.join(MOTION_METHODS)}; got {self.motion!r}")
        for name in ("min_motion", "max_motion"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0 or None; got {value!r}")

    def resolved(self) -> CurateConfig:
        """``motion="auto"`` replaced by the method this machine runs and ``min_motion`` by its default."""
        method = resolve_motion_method(self.motion)
        min_motion = self.min_motion
        if min_motion is None and method != "off":
            min_motion = DEFAULT_MIN_MOTION[method]
        return replace(self, motion=method, min_motion=min_motion)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["scorers"] = [s.to_json() for s in self.scorers]
        data["captioner"] = None if self.captioner is None else self.captioner.to_json()
        return data


# --------------------------------------------------------------------------------------------
# Metadata filters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drop:
    """Why something was dropped: the filter's name and a sentence with the measured value and the threshold."""

    filter: str
    reason: str


def check_media(info: MediaInfo, config: CurateConfig, duration: float | None = None) -> Drop | None:
    """The whole-file filters, from probing alone: frame rate, shorter side, duration (videos)."""
    if info.short_edge < config.min_short_edge:
        return Drop("short_edge", f"shorter side {info.short_edge} px < {config.min_short_edge} px")
    if info.kind != "video":
        return None
    if info.fps < config.min_fps:
        return Drop("fps", f"{info.fps:.3g} fps < {config.min_fps:g} fps")
    if config.max_fps is not None and info.fps > config.max_fps:
        return Drop("fps", f"{info.fps:.3g} fps > {config.max_fps:g} fps")
    duration = info.duration if duration is None else duration
    if duration < config.min_duration:
        return Drop("duration", f"{duration:.3g} s < {config.min_duration:g} s")
    return None


def check_motion(value: float, config: CurateConfig) -> Drop | None:
    """The clip-level motion filter (``config`` must be ``resolved()``)."""
    if config.motion == "off":
        return None
    if math.isnan(value):
        return Drop("motion", "no motion measurement (the clip is shorter than two motion-grid frames)")
    if config.min_motion is not None and value < config.min_motion:
        return Drop("motion", f"motion {value:.4g} < {config.min_motion:g} ({config.motion}): static")
    if config.max_motion is not None and value > config.max_motion:
        return Drop("motion", f"motion {value:.4g} > {config.max_motion:g} ({config.motion})")
    return None


# --------------------------------------------------------------------------------------------
# Motion measures between two grey frames (float32 [h, w], 0..255)
# --------------------------------------------------------------------------------------------


@functools.cache
def opencv_available() -> bool:
    """Whether OpenCV imports (not just whether it is installed: a broken install must fall back, not fail)."""
    try:
        import cv2  # noqa: F401
    except Exception:
        return False
    return True


def resolve_motion_method(method: str) -> str:
    """``auto`` -> ``flow`` when OpenCV is importable, else ``diff``; ``flow`` without OpenCV is an error."""
    if method not in MOTION_METHODS:
        raise ValueError(f"motion must be one of {', '.join(MOTION_METHODS)}; got {method!r}")
    if method == "auto":
        return "flow" if opencv_available() else "diff"
    if method == "flow" and not opencv_available():
        raise ValueError(
            "motion 'flow' needs OpenCV: pip install 'infinitystar[curate]' (opencv-python-headless), "
            "or use --motion diff"
        )
    return method


def frame_difference_motion(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute grey-level difference / 255."""
    return float(np.abs(b - a).mean()) / 255.0


def optical_flow_motion(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Farneback optical-flow magnitude as a fraction of the frame's shorter side."""
    import cv2

    flow = cv2.calcOpticalFlowFarneback(
        a.astype(np.uint8), b.astype(np.uint8), None, 0.5, 3, 9, 3, 5, 1.1, 0
    )  # [h, w, 2] pixel displacements
    return float(np.sqrt((flow**2).sum(axis=-1)).mean()) / min(a.shape)


def motion_measure(method: str) -> Callable[[np.ndarray, np.ndarray], float] | None:
    """The measure of a resolved method (``None`` for ``off``)."""
    return {"diff": frame_difference_motion, "flow": optical_flow_motion, "off": None}[method]
