"""Images and videos in and out of the package (moved from ``media.py``; split into modules next)."""

from .write import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    cover_resize_crop,
    frames_to_uint8,
    read_image,
    read_video,
    resample_indices,
    write_video,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "cover_resize_crop",
    "frames_to_uint8",
    "read_image",
    "read_video",
    "resample_indices",
    "write_video",
]
