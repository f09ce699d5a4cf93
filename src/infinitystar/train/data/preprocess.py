"""Preprocessing of training media, as the original did it: 16 fps resampling, 1 + 4k frame counts, aspect-template
snapping, Lanczos cover-resize and center crop, values in [-1, 1].

- **Frames**: the source clip ``[begin, end)`` (source frames) is resampled to 16 fps with the original training
  reader's formula (``media.resample_indices(..., original=True)``: nearest-lower frames, duplicates allowed), decoded
  with PyAV sequentially from frame 0 up to the last needed frame (exact, no seek; ``media.decode_frames``).
- **Durations**: training maps a clip of ``s`` seconds to ``min(int(s), max_duration)`` whole seconds, i.e.
  ``16 d + 1`` frames and ``4 d + 1`` latent frames (1 s -> 17 / 5, 5 s -> 81 / 21). Extraction caches the longest
  ``1 + 4k`` frames that fit (0.25 s steps) up to ``max_frames``; training slices the first ``4 d + 1`` latents.
- **Size**: the template is the aspect ratio h/w nearest to the source's (``schedule.nearest_template``); the pixel
  size is the template's size at the chosen :class:`Resolution`. Each frame is resized with PIL Lanczos to cover the
  target, keeping its aspect, and center-cropped (``media.cover_resize_crop``, which rounds the covering size up
  where the original's ``int()`` could leave it 1 pixel short).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from infinitystar.media.decode import decode_frames, decode_image
from infinitystar.media.frames import to_unit_range
from infinitystar.media.probe import MediaError, MediaInfo, probe_media
from infinitystar.media.resample import cover_resize_crop, resample_indices
from infinitystar.sizes import (
    FPS,
    PN_NUM_SCALES,
    RESOLUTIONS,
    SPATIAL_COMPRESSION,
    TEMPORAL_COMPRESSION,
    aspect_templates,
    nearest_template,
    pixel_size,
)
from infinitystar.train.data.manifest import MediaItem

#: The original asserts that a clip ends at most this long after the video (its reader's tolerance); a header frame
#: count that overstates what decodes by up to this much is tolerated (the last decoded frame is repeated).
END_TOLERANCE_S = 0.2
#: A manifest's ``fps`` may differ from the stream's by this fraction (29.97 vs 30 is fine; 24 vs 30 is not).
FPS_TOLERANCE = 0.02


# ----------------------------------------------------------------------------------------------------------------------
# Resolutions


_FIXED = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
_SCALES = re.compile(r"^\s*scales\s*[:=]\s*(\d+)\s*$")


@dataclass(frozen=True)
class Resolution:
    """Which pixel size a source of aspect ratio h/w is brought to.

    Parse one of:

    - ``'480p'`` / ``'720p'`` or a budget ``'0.06M'``, ``'0.25M'``, ``'0.40M'``, ``'0.90M'``: the original's templates
      (480p 9:16 -> 480x848);
    - ``'scales:K'``: the template's K-th spatial scale (1..15) times 16, a small budget that keeps the multi-aspect
      templates (``'scales:3'``: 48x48 for 1:1, 32x64 for 9:16), for tiny CPU models;
    - ``'HxW'`` (e.g. ``'32x48'``): one fixed size for everything (multiples of 16), for tests; the template is the
      one nearest H/W.
    """

    spec: str
    pn: str | None = None
    num_scales: int | None = None
    size: tuple[int, int] | None = None

    @classmethod
    def parse(cls, spec: str | Resolution) -> Resolution:
        if isinstance(spec, Resolution):
            return spec
        accepted = (
            f"accepted: {', '.join(list(RESOLUTIONS) + list(PN_NUM_SCALES))}, 'scales:K' (K = 1..15) "
            "or 'HxW' in pixels (multiples of 16, e.g. '32x48')"
        )
        if not isinstance(spec, str):
            raise ValueError(f"resolution must be a string; {accepted}")
        text = spec.strip()
        if text in RESOLUTIONS or text in PN_NUM_SCALES:
            return cls(text, pn=RESOLUTIONS.get(text, text))
        m = _SCALES.match(text)
        if m:
            k = int(m.group(1))
            if not 1 <= k <= 15:
                raise ValueError(f"resolution {spec!r}: K must be in 1..15; {accepted}")
            return cls(f"scales:{k}", num_scales=k)
        m = _FIXED.match(text)
        if m:
            h, w = int(m.group(1)), int(m.group(2))
            if min(h, w) < SPATIAL_COMPRESSION or h % SPATIAL_COMPRESSION or w % SPATIAL_COMPRESSION:
                raise ValueError(f"resolution {spec!r}: height and width must be positive multiples of 16; {accepted}")
            return cls(f"{h}x{w}", size=(h, w))
        raise ValueError(f"unknown resolution {spec!r}; {accepted}")

    def template(self, h_div_w: float) -> float:
        """The aspect template (h/w key) used for a source of aspect ``h_div_w``."""
        if self.size is not None:
            return nearest_template(self.size[0] / self.size[1])
        return nearest_template(h_div_w)

    def pixel_size(self, h_div_w: float) -> tuple[int, int]:
        """Pixel (height, width) for a source of aspect ``h_div_w``."""
        if self.size is not None:
            return self.size
        if self.pn is not None:
            return pixel_size(h_div_w, self.pn)
        ph, pw = aspect_templates()[nearest_template(h_div_w)][self.num_scales - 1]
        return ph * SPATIAL_COMPRESSION, pw * SPATIAL_COMPRESSION


# ----------------------------------------------------------------------------------------------------------------------
# Durations


def check_frame_count(num_frames: int, name: str = "num_frames") -> int:
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1 or (num_frames - 1) % 4:
        raise ValueError(f"{name} must be 1 + 4k (1, 5, 9, ..., 17, ..., 81), got {num_frames!r}")
    return num_frames


def mapped_duration(seconds: float, max_duration: int | None = None) -> int:
    """Whole seconds a clip trains as: ``int(seconds)``, capped at ``max_duration`` (the original's
    ``duration_resolution=1``; longer clips are truncated). 0 means shorter than one second."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration must be a non-negative number of seconds, got {seconds!r}")
    whole = int(seconds + 1e-6)
    return whole if max_duration is None else min(whole, int(max_duration))


def frames_for_seconds(seconds: int) -> int:
    """Frames of a ``seconds`` long training clip at 16 fps: ``16 s + 1``."""
    return FPS * int(seconds) + 1


def latent_frames_for_seconds(seconds: int) -> int:
    """Latent frames of a ``seconds`` long clip: ``4 s + 1`` (1 for an image)."""
    return (FPS // TEMPORAL_COMPRESSION) * int(seconds) + 1


def extraction_frames(seconds: float, max_frames: int) -> int:
    """Frames extraction caches for a clip of ``seconds``: the longest ``1 + 4k`` (0.25 s steps at 16 fps) that
    fits, at most ``max_frames``. The original's ``duration_resolution = 4 / fps``."""
    check_frame_count(max_frames, "max_frames")
    quarters = math.floor(seconds * FPS / TEMPORAL_COMPRESSION + 1e-6)
    return min(1 + TEMPORAL_COMPRESSION * max(quarters, 0), max_frames)


# ----------------------------------------------------------------------------------------------------------------------
# Probing and decoding


def probe_video(path: str | Path) -> MediaInfo:
    """Frame count, frame rate and size of a video: the header's count, else its packets counted (exact, so that
    frame ranges can be checked); ``fps`` is ``None`` when the stream gives no rate (the manifest's is used)."""
    return probe_media(path, "video", count_packets=True, require_fps=False)


# ----------------------------------------------------------------------------------------------------------------------
# One item


@dataclass
class Clip:
    """A preprocessed video clip or image."""

    video: Tensor  #: [3, T, H, W] float32 in [-1, 1]; T = 1 for an image
    h_div_w: float  #: the aspect template
    seconds: float  #: real duration of the source clip (0 for an image)
    frame_indices: tuple[int, ...]  #: source frames used (empty for an image)
    source_fps: float | None
    source_hw: tuple[int, int]  #: source (height, width)

    @property
    def num_frames(self) -> int:
        return int(self.video.shape[1])


@dataclass(frozen=True)
class ClipPlan:
    """Where the frames of a video item come from, before decoding."""

    begin: int
    end: int  #: exclusive, source frames
    fps: float
    seconds: float
    probe: MediaInfo


def plan_video(item: MediaItem, probe: MediaInfo | None = None) -> ClipPlan:
    """Check a video item's frame range and frame rate against the file; raise :class:`MediaError` if inconsistent."""
    probe = probe if probe is not None else probe_video(item.path)
    fps = probe.fps
    if item.fps is not None:
        if fps is not None and abs(item.fps - fps) > FPS_TOLERANCE * fps:
            raise MediaError(
                f"{item.where or item.path}: the manifest says fps={item.fps:g} but the video stream runs at "
                f"{fps:g} fps; fix the 'fps' field (frame ids are counted in the source's frames)"
            )
        fps = item.fps
    if fps is None or not math.isfinite(fps) or fps <= 0:
        raise MediaError(
            f"cannot read video {item.path}: the video stream has no frame rate; give 'fps' in the manifest",
            path=item.path,
        )
    n = probe.num_frames
    end = n if item.end_frame is None else item.end_frame
    slack = max(1, round(END_TOLERANCE_S * fps))
    if item.begin_frame >= n:
        raise MediaError(f"{item.where or item.path}: begin_frame_id {item.begin_frame} is past the video's {n} frames")
    if end > n + slack:
        raise MediaError(
            f"{item.where or item.path}: end_frame_id {end} is past the video's {n} frames "
            f"({n / fps:.2f} s at {fps:g} fps)"
        )
    end = min(end, n)
    return ClipPlan(item.begin_frame, end, fps, (end - item.begin_frame) / fps, probe)


def load_video(
    item: MediaItem,
    resolution: Resolution | str,
    *,
    num_frames: int | None = None,
    max_frames: int = 81,
    min_frames: int = 17,
    plan: ClipPlan | None = None,
) -> Clip:
    """Decode, resample to 16 fps, resize and crop a video item.

    ``num_frames``: exactly this many 16 fps frames from the clip start (1 + 4k); by default the longest ``1 + 4k``
    that fits, at most ``max_frames`` (extraction). Clips giving fewer than ``min_frames`` frames (default 17 = 1 s)
    are too short.
    """
    resolution = Resolution.parse(resolution)
    plan = plan if plan is not None else plan_video(item)
    if num_frames is None:
        frames = extraction_frames(plan.seconds, max_frames)
        short, need = frames < min_frames, min_frames
    else:
        frames = check_frame_count(num_frames)
        short, need = (frames - 1) / FPS > plan.seconds + 1e-6, frames
    if short:
        raise MediaError(
            f"video {item.path} is too short: the clip lasts {plan.seconds:.2f} s "
            f"({plan.end - plan.begin} frames at {plan.fps:g} fps); {need} frames at 16 fps "
            f"({(need - 1) / FPS:g} s) are needed"
        )
    indices = resample_indices(plan.end, plan.fps, frames, start_frame=plan.begin, original=True)
    images = decode_frames(item.path, indices, tolerance=max(1, round(END_TOLERANCE_S * plan.fps)))
    h0, w0 = images[0].height, images[0].width
    template = resolution.template(h0 / w0)
    height, width = resolution.pixel_size(h0 / w0)
    images = [cover_resize_crop(im, height, width) for im in images]
    return Clip(to_unit_range(images, contiguous=True), template, plan.seconds, tuple(indices), plan.fps, (h0, w0))


def load_image(item: MediaItem | str | Path, resolution: Resolution | str) -> Clip:
    """Read, resize and crop an image item: ``[3, 1, H, W]``."""
    resolution = Resolution.parse(resolution)
    im = decode_image(item.path if isinstance(item, MediaItem) else item)
    h0, w0 = im.height, im.width
    height, width = resolution.pixel_size(h0 / w0)
    im = cover_resize_crop(im, height, width)
    return Clip(to_unit_range([im], contiguous=True), resolution.template(h0 / w0), 0.0, (), None, (h0, w0))


def load_item(
    item: MediaItem,
    resolution: Resolution | str,
    *,
    num_frames: int | None = None,
    max_frames: int = 81,
    min_frames: int = 17,
) -> Clip:
    """A manifest item as a preprocessed :class:`Clip` (``[3, T, H, W]`` in [-1, 1]); raises :class:`MediaError`."""
    if item.is_video:
        return load_video(item, resolution, num_frames=num_frames, max_frames=max_frames, min_frames=min_frames)
    return load_image(item, resolution)
