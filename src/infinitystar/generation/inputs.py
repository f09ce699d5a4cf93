"""Image and video inputs of a generation (image-to-video, continuation): files, PIL images, arrays or tensors,
checked and brought to the model's size as ``[3, T, H, W]`` in [-1, 1]."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

#: where the built-in default model lives inside the package (trained by the project)
from infinitystar.sizes import (
    TEMPORAL_COMPRESSION,
)

# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _as_pil_frames(frames: np.ndarray) -> list:
    from PIL import Image

    return [Image.fromarray(f) for f in frames]


def _array_frames(x: Any, what: str) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` from an array or tensor given as uint8 ``[..., H, W, 3]`` or float
    ``[3, ..., H, W]`` in [-1, 1]."""
    if isinstance(x, torch.Tensor):
        if x.is_floating_point():
            if x.shape[0] != 3:
                raise ValueError(f"a float {what} tensor must be [3, (T,) H, W] in [-1, 1], got {tuple(x.shape)}")
            if not torch.isfinite(x).all():
                raise ValueError(f"the {what} tensor contains NaN or infinite values")
            x = ((x.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            x = x.movedim(0, -1)  # [3, (T,) H, W] -> [(T,) H, W, 3]
        x = x.cpu().numpy()
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.shape[-1] != 3 or x.ndim not in (3, 4):
        raise ValueError(
            f"{what} must be a file path, a PIL image, uint8 [(T,) H, W, 3] or float [3, (T,) H, W] in [-1, 1]; "
            f"got {x.dtype} {x.shape}"
        )
    return x if x.ndim == 4 else x[None]


def _frames_to_unit(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float ``[3, T, H, W]`` in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).float().div(127.5).sub(1).permute(3, 0, 1, 2)


def _resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from infinitystar.media import cover_resize_crop

    if frames.shape[1:3] == size:
        return frames
    return np.stack([np.asarray(cover_resize_crop(im, *size)) for im in _as_pil_frames(frames)])


def input_aspect(x: Any, what: str) -> float:
    """h / w of an image or video input without decoding more than needed."""
    if isinstance(x, (str, Path)):
        from infinitystar.media.probe import probe_media

        info = probe_media(x, what, require_fps=False)  # the header only; MediaError (a ValueError) if unreadable
        return info.height / info.width
    if hasattr(x, "size") and hasattr(x, "convert"):  # PIL image
        w, h = x.size
        return h / w
    arr = _array_frames(x, what)
    return arr.shape[1] / arr.shape[2]


def load_image_input(image: Any, size: tuple[int, int]) -> torch.Tensor:
    """An image (path, PIL image, array or tensor) as ``[3, 1, H, W]`` in [-1, 1] at ``size``."""
    from infinitystar.media import cover_resize_crop, read_image

    if isinstance(image, (str, Path)):
        return read_image(image, size=size)[:, None]
    if hasattr(image, "size") and hasattr(image, "convert"):
        arr = np.asarray(cover_resize_crop(image.convert("RGB"), *size))[None]
    else:
        arr = _array_frames(image, "image")
        if arr.shape[0] != 1:
            raise ValueError(f"image must be one frame, got {arr.shape[0]}; pass several frames as video=")
        arr = _resize_frames(arr, size)
    return _frames_to_unit(arr)


def load_video_input(video: Any, size: tuple[int, int]) -> torch.Tensor:
    """A video (path, or frames at 16 fps as an array or tensor) as ``[3, T, H, W]`` in [-1, 1],
    T = 1 + 4k (a video file is resampled to 16 fps and trimmed to the longest such count)."""
    from infinitystar.media import read_video

    if isinstance(video, (str, Path)):
        return read_video(video, size=size)
    arr = _array_frames(video, "video")
    keep = 1 + TEMPORAL_COMPRESSION * ((arr.shape[0] - 1) // TEMPORAL_COMPRESSION)
    return _frames_to_unit(_resize_frames(arr[:keep], size))
