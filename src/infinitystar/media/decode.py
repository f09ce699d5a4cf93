"""Decoding images and videos to pixels: Pillow images, PyAV frames, or uint8 RGB numpy arrays.

Imports no torch (curation workers use it; see :mod:`.probe`). Videos are always decoded sequentially from the
first frame, never by seeking, so a frame index is a decode-order count: the same numbering as a manifest's
``begin_frame_id`` / ``end_frame_id`` and as the original training reader. Every failure is a
:class:`~.probe.MediaError` naming the file.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from infinitystar.media.probe import (
    MediaError,
    MediaInfo,
    check_media_file,
    decoder_detail,
    media_error,
    open_image,
    stream_duration,
    video_errors,
)
from infinitystar.media.resample import resample_indices, scaled_size
from infinitystar.sizes import FPS

# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def decode_image(path: str | Path):
    """An image file fully decoded as an RGB PIL image."""
    with open_image(path) as im:
        return im.convert("RGB")


def read_image_rgb(path: str | Path, short_edge: int | None = None) -> np.ndarray:
    """An image as uint8 ``[h, w, 3]`` RGB, optionally box-downscaled so its shorter side is ``short_edge``."""
    from PIL import Image

    with open_image(path) as im:
        im = im.convert("RGB")
        if short_edge is not None:
            size = scaled_size(im.width, im.height, short_edge)
            if size != im.size:
                im = im.resize(size, Image.BOX)
        return np.asarray(im).copy()


# --------------------------------------------------------------------------------------------
# Videos
# --------------------------------------------------------------------------------------------


class VideoDecoder:
    """The first video stream of a file, decoded in order; use as a context manager.

    ``threaded``: let FFmpeg decode with several threads (the training reader does; curation workers, already one
    per core, do not). Frames are identical either way.
    """

    def __init__(self, path: str | Path, *, threaded: bool = False) -> None:
        self.path, _ = check_media_file(path, "video")
        self.threaded = threaded
        self.decoded = 0  # frames decoded so far
        self._container = None
        self.stream = None

    def __enter__(self) -> VideoDecoder:
        import av

        try:
            self._container = av.open(str(self.path))
            if not self._container.streams.video:
                raise media_error(self.path, "video", "it has no video stream")
            self.stream = self._container.streams.video[0]
            if self.threaded:
                self.stream.thread_type = "AUTO"
        except BaseException as exc:  # close what was opened, whatever went wrong
            self.close()
            if isinstance(exc, MediaError) or not isinstance(exc, video_errors()):
                raise
            raise media_error(self.path, "video", "it is corrupt or not a video", detail=decoder_detail(exc)) from exc
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    @property
    def duration(self) -> float:
        """Seconds, from the stream's or the container's header (0 when neither says)."""
        return stream_duration(self._container, self.stream)

    @property
    def rate(self) -> float | None:
        """The stream's frames per second (average, else guessed), ``None`` when it gives none."""
        rate = self.stream.average_rate or self.stream.guessed_rate
        return float(rate) if rate else None

    def frames(self, stop: int | None = None) -> Iterator[tuple[int, object]]:
        """``(index, frame)`` with PyAV frames from the first on; ``stop`` ends before that index (without
        decoding it). A decoding error, a corrupt or truncated stream, is raised as :class:`MediaError`."""
        if stop is not None and stop <= 0:
            return
        try:
            for frame in self._container.decode(self.stream):
                self.decoded += 1
                yield self.decoded - 1, frame
                if stop is not None and self.decoded >= stop:
                    return
        except MediaError:
            raise
        except video_errors() as exc:
            raise media_error(
                self.path,
                "video",
                f"it is corrupt or truncated: decoding failed after {self.decoded} frames",
                detail=decoder_detail(exc),
            ) from exc


def iter_video_frames(path: str | Path, *, stop: int | None = None) -> Iterator[tuple[int, object]]:
    """Decode a video in order and yield ``(index, frame)`` with PyAV frames; ``stop`` ends before that index."""
    with VideoDecoder(path) as video:
        yield from video.frames(stop)


def frame_to_rgb(frame, short_edge: int) -> np.ndarray:
    """A PyAV frame as uint8 ``[h, w, 3]`` RGB with its shorter side at ``short_edge`` (area-averaged)."""
    w, h = scaled_size(frame.width, frame.height, short_edge)
    return frame.to_ndarray(width=w, height=h, format="rgb24", interpolation="AREA")


def read_video_frames(path: str | Path, requests: dict[int, set[int]]) -> dict[tuple[int, int], np.ndarray]:
    """Decode the frames asked for: ``requests[index] = {short_edge, ...}`` -> ``{(index, short_edge): [h, w, 3]}``.

    One sequential pass up to the last requested index, every size from the same decoded frame (curation samples
    frames for scorers and captioners at different sizes). A requested index past the end is an error: the frame
    ranges come from an earlier decoding of the same file, so the file changed.
    """
    if not requests:
        return {}
    out: dict[tuple[int, int], np.ndarray] = {}
    with VideoDecoder(path) as video:
        for index, frame in video.frames(stop=max(requests) + 1):
            for size in requests.get(index, ()):
                out[(index, size)] = frame_to_rgb(frame, size)
        missing = sorted(i for i in requests if i >= video.decoded)
    if missing:
        raise media_error(
            path,
            "video",
            f"frames {missing[:5]} could not be decoded: the video ended early, after {video.decoded} frames",
        )
    return out


def decode_frames(path: str | Path, indices: list[int], *, tolerance: int = 0) -> list:
    """RGB PIL images of the given source frame indices (sorted, duplicates allowed), decoded sequentially.

    A stream that ends before the last index by at most ``tolerance`` frames repeats its last frame (header counts
    are sometimes one or two frames too high); a larger shortfall is an error.
    """
    if not indices:
        raise ValueError("no frame indices to decode")
    wanted = set(indices)
    last = max(indices)
    got: dict[int, object] = {}
    previous = None  # the last decoded frame, kept as a stand-in for a short stream
    with VideoDecoder(path, threaded=True) as video:
        for index, frame in video.frames(stop=last + 1):
            if index in wanted:
                got[index] = frame.to_image().convert("RGB")
            previous = frame
        decoded = video.decoded
    if decoded <= last:
        if previous is None:
            raise media_error(path, "video", "it has no frames")
        if last - (decoded - 1) > tolerance:
            raise media_error(
                path,
                "video",
                f"it is truncated: frame {last} is needed but decoding stopped after {decoded} frames "
                f"(at most {tolerance} missing frames are tolerated)",
            )
        stand_in = got.get(decoded - 1)
        if stand_in is None:
            stand_in = previous.to_image().convert("RGB")
        for i in indices:
            if i >= decoded:
                got[i] = stand_in
    return [got[i] for i in indices]


def read_video_uint8(path: str | Path, num_frames: int | None = None) -> np.ndarray:
    """A video's frames resampled to 16 fps as uint8 RGB ``[T, H, W, 3]`` (nearest lower source frame).

    ``num_frames``: that many 16 fps frames from the start (a :class:`MediaError` says so when the video is
    shorter); by default every 16 fps frame time inside the video's duration, at least one. Decoded straight to
    uint8: a float copy of a 480p 5 s video would be 4x larger. The rate is the stream's, else 16 fps.
    """
    with VideoDecoder(path) as video:
        rate = video.rate or float(FPS)
        frames = [frame.to_ndarray(format="rgb24") for _, frame in video.frames()]
    if not frames:
        raise media_error(path, "video", "it has no frames")
    available = max(1, math.ceil(len(frames) / rate * FPS - 1e-6))  # 16 fps frame times inside the duration
    if num_frames is None:
        num_frames = available
    elif num_frames > available:
        raise media_error(
            path,
            "video",
            f"it is too short: {num_frames} frames at 16 fps are needed, its {len(frames)} frames at {rate:g} fps "
            f"give {available}",
        )
    return np.stack([frames[i] for i in resample_indices(len(frames), rate, num_frames)])  # [T, H, W, 3]


# --------------------------------------------------------------------------------------------
# Checking that a file decodes
# --------------------------------------------------------------------------------------------


def verify_decodes(path: str | Path, kind: str | None = None, *, all_frames: bool = False) -> MediaInfo:
    """Check that an image or video file decodes, before a model or a user relies on it; raise :class:`MediaError`.

    An image is decoded fully (a truncated file fails here). A video must have a video stream whose first frame
    decodes, or with ``all_frames`` every frame (slower; e.g. to check that an output file written earlier is
    whole). Returns the file's :class:`MediaInfo` with the size of the decoded pixels; a video's ``num_frames`` is
    the count decoded with ``all_frames``, otherwise the container's (0 when it has none). ``kind``: the kind the
    caller expects (the suffix must match); by default the suffix decides.
    """
    path, kind = check_media_file(path, kind)
    if kind == "image":
        with open_image(path) as im:
            im.load()
            width, height = im.size
        return MediaInfo(str(path), "image", width, height, None, 1, 0.0)
    with VideoDecoder(path) as video:
        first = None
        for _, frame in video.frames(stop=None if all_frames else 1):
            if first is None:
                first = frame
        if first is None:
            raise media_error(path, "video", "it has no frames")
        fps, duration = video.rate, video.duration
        num_frames = video.decoded if all_frames else int(video.stream.frames or 0)
    return MediaInfo(str(path), "video", first.width, first.height, fps, num_frames, duration)
