"""Image and video files as the model's input tensors: ``[3, (T,) H, W]`` in [-1, 1], videos at 16 fps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from infinitystar.media.decode import decode_image, read_video_uint8
from infinitystar.media.frames import to_unit_range
from infinitystar.media.probe import check_media_file
from infinitystar.media.resample import cover_resize_crop


def read_image(path: str | Path, size: tuple[int, int] | None = None) -> Tensor:
    """An image file as ``[3, H, W]`` in [-1, 1] (RGB), optionally cover-resized and cropped to ``size``."""
    im = decode_image(path)
    if size is not None:
        im = cover_resize_crop(im, *size)
    return to_unit_range(np.asarray(im)[None])[:, 0]  # [1, H, W, 3] -> [3, 1, H, W] -> [3, H, W]


def read_video(path: str | Path, *, num_frames: int | None = None, size: tuple[int, int] | None = None) -> Tensor:
    """A video file as ``[3, T, H, W]`` in [-1, 1], resampled to 16 fps.

    ``num_frames``: how many 16 fps frames to take from the start (must be 1 + 4k and fit in the
    video); by default the longest 1 + 4k that fits. ``size``: cover-resize and crop each frame.
    """
    from PIL import Image

    check_media_file(path, "video")  # a missing file is reported before a bad num_frames
    if num_frames is not None and (num_frames < 1 or (num_frames - 1) % 4):
        raise ValueError(f"num_frames must be 1 + 4k (1, 5, 9, ..., 81), got {num_frames}")
    frames = read_video_uint8(path, num_frames)  # [T, H, W, 3] uint8
    if num_frames is None:
        frames = frames[: 1 + 4 * ((len(frames) - 1) // 4)]  # the longest 1 + 4k
    if size is not None:
        frames = np.stack([np.asarray(cover_resize_crop(Image.fromarray(f), *size)) for f in frames])
    return to_unit_range(frames)
