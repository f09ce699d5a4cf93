"""Probing and decoding media for curation (PyAV for videos, Pillow for images).

Everything here works on numpy uint8 ``[H, W, 3]`` RGB frames and imports no torch, so curation workers start
fast. Errors are ``MediaError`` (a ``ValueError``) with the file and what went wrong.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class MediaError(ValueError):
    """A media file is missing, corrupt, empty or of an unsupported type."""


def media_kind(path: str | Path) -> str | None:
    """``"video"``, ``"image"`` or ``None`` from the file suffix (case-insensitive)."""
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    return None


@dataclass(frozen=True)
class MediaInfo:
    """What probing a file tells, without decoding it.

    ``num_frames`` and ``duration`` come from the container and can be estimates (some containers store no frame
    count); the curation pass counts the decoded frames itself. Images have ``fps=None``, one frame, duration 0.
    """

    path: str
    kind: str  # "video" or "image"
    width: int
    height: int
    fps: float | None
    num_frames: int
    duration: float

    @property
    def short_edge(self) -> int:
        return min(self.width, self.height)


def _require(path: str | Path) -> tuple[Path, str]:
    path = Path(path)
    kind = media_kind(path)
    if kind is None:
        accepted = ", ".join(VIDEO_SUFFIXES + IMAGE_SUFFIXES)
        raise MediaError(f"{path}: unsupported file type {path.suffix!r}; accepted: {accepted}")
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")
    return path, kind


def probe_media(path: str | Path) -> MediaInfo:
    """Size, frame rate, frame count and duration of a video or image file."""
    path, kind = _require(path)
    if kind == "image":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                width, height = im.size
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise MediaError(f"{path}: corrupt or not an image ({exc})") from exc
        return MediaInfo(str(path), "image", width, height, None, 1, 0.0)

    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 0.0
            width, height = stream.codec_context.width, stream.codec_context.height
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000  # container durations are in microseconds
            else:
                duration = 0.0
            num_frames = int(stream.frames or 0)
    except av.error.FFmpegError as exc:
        raise MediaError(f"{path}: corrupt or unreadable video ({exc})") from exc
    if fps <= 0 or not math.isfinite(fps):
        raise MediaError(f"{path}: the video stream has no frame rate")
    if width <= 0 or height <= 0:
        raise MediaError(f"{path}: the video stream has no frame size")
    if num_frames <= 0:
        num_frames = round(duration * fps)
    if duration <= 0:
        duration = num_frames / fps
    return MediaInfo(str(path), "video", width, height, fps, num_frames, duration)


def scaled_size(width: int, height: int, short_edge: int) -> tuple[int, int]:
    """``(w, h)`` with the shorter side at ``short_edge`` (never upscaled), aspect kept, at least 1 pixel."""
    scale = min(1.0, short_edge / min(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def iter_video_frames(path: str | Path, *, stop: int | None = None) -> Iterator[tuple[int, object]]:
    """Decode a video in order and yield ``(index, frame)`` with PyAV frames; ``stop`` ends before that index.

    Decoding is sequential from the first frame, as the original training reader does, so frame indices are
    decode-order counts that match ``begin_frame_id`` / ``end_frame_id`` in the manifest.
    A decoding error is raised as ``MediaError`` (the file is corrupt or truncated).
    """
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for index, frame in enumerate(container.decode(stream)):
                if stop is not None and index >= stop:
                    return
                yield index, frame
    except av.error.FFmpegError as exc:
        raise MediaError(f"{path}: corrupt or truncated video ({exc})") from exc
    except IndexError as exc:
        raise MediaError(f"{path}: no video stream") from exc


def frame_to_rgb(frame, short_edge: int) -> np.ndarray:
    """A PyAV frame as uint8 ``[h, w, 3]`` RGB with its shorter side at ``short_edge`` (area-averaged)."""
    w, h = scaled_size(frame.width, frame.height, short_edge)
    return frame.to_ndarray(width=w, height=h, format="rgb24", interpolation="AREA")


def read_video_frames(path: str | Path, requests: dict[int, set[int]]) -> dict[tuple[int, int], np.ndarray]:
    """Decode the frames asked for: ``requests[index] = {short_edge, ...}`` -> ``{(index, short_edge): [h, w, 3]}``.

    One sequential pass up to the last requested index. A requested index past the end of the video is an error
    (the frame ranges come from an earlier decoding of the same file, so this means the file changed).
    """
    if not requests:
        return {}
    last = max(requests)
    out: dict[tuple[int, int], np.ndarray] = {}
    for index, frame in iter_video_frames(path, stop=last + 1):
        for size in requests.get(index, ()):
            out[(index, size)] = frame_to_rgb(frame, size)
    missing = sorted(i for i in requests if (i, next(iter(requests[i]))) not in out)
    if missing:
        raise MediaError(f"{path}: frames {missing[:5]} could not be decoded (the video ended early)")
    return out


def read_image_rgb(path: str | Path, short_edge: int | None = None) -> np.ndarray:
    """An image as uint8 ``[h, w, 3]`` RGB, optionally downscaled so its shorter side is ``short_edge``."""
    from PIL import Image, UnidentifiedImageError

    path, _ = _require(path)
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if short_edge is not None:
                size = scaled_size(im.width, im.height, short_edge)
                if size != im.size:
                    im = im.resize(size, Image.BOX)
            return np.asarray(im).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise MediaError(f"{path}: corrupt or not an image ({exc})") from exc
