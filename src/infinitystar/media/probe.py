"""What a media file is, before decoding it: its kind, size, frame rate and frame count.

This module and :mod:`.decode` import no torch (curation workers import them and must start fast); PyAV and Pillow
are imported inside the functions that need them.

Every problem with a file is a :class:`MediaError` with one message style: the file, what is wrong and, where it
helps, what is accepted, e.g. ``cannot read video clips/a.mkv: it has no video stream`` or
``cannot read image notes.doc: unsupported file type '.doc'; accepted: .png, .jpg, .jpeg, .webp, .bmp``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")
_SUFFIXES = {"image": IMAGE_SUFFIXES, "video": VIDEO_SUFFIXES}


class MediaError(ValueError):
    """A media file is missing, empty, corrupt, of an unsupported type, or unusable for what was asked.

    Curation, training, evaluation and the pipeline all raise this one class. ``path`` and ``reason`` (what is
    wrong, without the decoder's own words) let a caller reword the message: the web demo names only the uploaded
    file's name, not the server's temporary path.
    """

    def __init__(self, message: str, *, path: str | Path | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.reason = reason


def media_error(
    path: str | Path, kind: str | None, reason: str, *, detail: str | None = None, accepted: str | None = None
) -> MediaError:
    """A :class:`MediaError` in the one style: ``cannot read {kind} {path}: {reason} ({detail}); accepted: ...``."""
    message = f"cannot read {kind + ' ' if kind else ''}{path}: {reason}"
    if detail:
        message += f" ({detail})"
    if accepted:
        message += f"; accepted: {accepted}"
    return MediaError(message, path=path, reason=reason)


def decoder_detail(exc: BaseException) -> str:
    """The decoder's own words, for the parenthesis of a message."""
    return f"{type(exc).__name__}: {exc}"


def video_errors() -> tuple[type[BaseException], ...]:
    """What PyAV raises for a corrupt, truncated or odd video (broken metadata even raises UnicodeDecodeError)."""
    import av

    return (av.error.FFmpegError, OSError, IndexError, ValueError, RuntimeError, UnicodeDecodeError)


def image_errors() -> tuple[type[BaseException], ...]:
    """What Pillow raises for a corrupt or truncated image (its plug-ins raise more than OSError)."""
    return (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)


def media_kind(path: str | Path) -> str | None:
    """``"video"``, ``"image"`` or ``None`` from the file suffix (case-insensitive)."""
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    return None


def check_media_file(path: str | Path, kind: str | None = None) -> tuple[Path, str]:
    """``(path, kind)`` once the file has a media suffix (of ``kind`` when given), exists and is not empty.

    Checked before opening so that a wrong name or an empty upload gets its own message rather than a decoder's.
    """
    if kind not in (None, "image", "video"):
        raise ValueError(f"kind must be 'image', 'video' or None, got {kind!r}")
    path = Path(path)
    found = media_kind(path)
    if found is None or (kind is not None and found != kind):
        accepted = _SUFFIXES[kind] if kind else VIDEO_SUFFIXES + IMAGE_SUFFIXES
        what = f"unsupported file type {path.suffix!r}" if path.suffix else "no file extension"
        raise media_error(path, kind, what, accepted=", ".join(accepted))
    if not path.is_file():
        raise media_error(path, found, "file not found")
    if path.stat().st_size == 0:
        raise media_error(path, found, "empty file (0 bytes)")
    return path, found


@dataclass(frozen=True)
class MediaInfo:
    """What probing a file tells, without decoding it.

    Images have ``fps=None``, one frame and duration 0. For videos ``num_frames`` is the container's count; where
    the container has none (webm and mkv headers often) it is counted from the packets with
    ``probe_media(..., count_packets=True)`` (exact, demuxing only) or else estimated from the duration (the
    curation pass counts the decoded frames itself). ``fps`` is ``None`` for a video only when probed with
    ``require_fps=False`` and the stream gives no rate.
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


@contextmanager
def open_image(path: str | Path) -> Iterator:
    """An image file opened with Pillow (lazily: the header now, the pixels on first use).

    Pillow errors inside the ``with`` block (a truncated file fails only when its pixels are read) become a
    :class:`MediaError`, so keep the block to Pillow work. An image too large to decode safely (Pillow's
    ``DecompressionBombError``) gets its own message.
    """
    from PIL import Image

    path, _ = check_media_file(path, "image")
    try:
        with Image.open(path) as im:
            yield im
    except MediaError:
        raise
    except Image.DecompressionBombError as exc:
        limit = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else None
        raise media_error(
            path,
            "image",
            "it is too large to decode safely",
            detail=str(exc),
            accepted=f"images up to {limit} pixels" if limit else None,
        ) from exc
    except image_errors() as exc:
        raise media_error(path, "image", "it is corrupt or not an image", detail=decoder_detail(exc)) from exc


def probe_media(
    path: str | Path, kind: str | None = None, *, count_packets: bool = False, require_fps: bool = True
) -> MediaInfo:
    """Size, frame rate, frame count and duration of a video, or size of an image (its header only).

    ``kind``: the kind the caller expects (the suffix must match); by default the suffix decides.
    ``count_packets``: count a video's packets when the container gives no frame count (training needs the exact
    count to check frame ranges; curation makes do with an estimate). ``require_fps``: a video whose stream gives
    no frame rate is an error (curation), rather than ``fps=None`` (training takes the rate from its manifest).
    """
    path, kind = check_media_file(path, kind)
    if kind == "image":
        with open_image(path) as im:
            width, height = im.size
        return MediaInfo(str(path), "image", width, height, None, 1, 0.0)
    return _probe_video(path, count_packets=count_packets, require_fps=require_fps)


def stream_duration(container, stream) -> float:
    """Seconds of a PyAV video stream from the stream's header, else the container's, else 0."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # container durations are in microseconds
    return 0.0


def _probe_video(path: Path, *, count_packets: bool, require_fps: bool) -> MediaInfo:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise media_error(path, "video", "it has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            width, height = int(stream.codec_context.width), int(stream.codec_context.height)
            duration = stream_duration(container, stream)
            num_frames = int(stream.frames or 0)
            if num_frames <= 0 and count_packets:  # demux only, no decoding
                num_frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
    except MediaError:
        raise
    except video_errors() as exc:
        raise media_error(path, "video", "it is corrupt or not a video", detail=decoder_detail(exc)) from exc
    fps = float(rate) if rate else None
    if fps is not None and (fps <= 0 or not math.isfinite(fps)):
        fps = None
    if fps is None and require_fps:
        raise media_error(path, "video", "the video stream has no frame rate")
    if min(width, height) <= 0:
        raise media_error(path, "video", f"the video stream has no frame size ({width}x{height})")
    if count_packets and num_frames <= 0:
        raise media_error(path, "video", "it has no frames")
    if num_frames <= 0 and fps is not None:
        num_frames = round(duration * fps)  # an estimate: the container has no count
    if duration <= 0 and fps is not None:
        duration = num_frames / fps
    return MediaInfo(str(path), "video", width, height, fps, num_frames, duration)
