"""Probing and decoding media for curation: the names the curation modules use, from :mod:`infinitystar.media`.

Everything here works on numpy uint8 ``[H, W, 3]`` RGB frames and imports no torch, so curation workers start
fast. Errors are :class:`~infinitystar.media.probe.MediaError`, the same class training and the pipeline raise.
"""

from __future__ import annotations

from ..media.decode import frame_to_rgb, iter_video_frames, read_image_rgb, read_video_frames
from ..media.probe import IMAGE_SUFFIXES, VIDEO_SUFFIXES, MediaError, MediaInfo, media_kind, probe_media
from ..media.resample import scaled_size

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "MediaError",
    "MediaInfo",
    "frame_to_rgb",
    "iter_video_frames",
    "media_kind",
    "probe_media",
    "read_image_rgb",
    "read_video_frames",
    "scaled_size",
]
