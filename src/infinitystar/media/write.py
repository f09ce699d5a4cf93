"""Images and videos in and out of the package."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..schedule import FPS

# --------------------------------------------------------------------------------------------
# Decoder output -> uint8 frames
# --------------------------------------------------------------------------------------------


def frames_to_uint8(decoded: Tensor, *, original_quirks: bool = False) -> Tensor:
    """VAE decoder output [B,3,T,H,W] in about [-1,1] -> uint8 frames [B,T,H,W,3].

    Default: ``round(clamp((x + 1) / 2, 0, 1) * 255)``, channels in RGB order: the nearest
    8-bit value, what image and video writers expect.

    ``original_quirks=True`` reproduces the original pipeline's post-processing exactly (for
    comparisons with its saved videos): ``((x + 1) / 2).clamp(0, 1) * 255`` cast to uint8
    (truncation, so values are up to 1 lower), channels reversed to **BGR** (it wrote frames
    with OpenCV), and frame 0 overwritten by a copy of frame 1 when there are at least two frames.
    """
    if not isinstance(decoded, Tensor) or decoded.ndim != 5 or decoded.shape[1] != 3:
        got = tuple(decoded.shape) if isinstance(decoded, Tensor) else type(decoded).__name__
        raise ValueError(f"decoded frames must be a float tensor [B, 3, T, H, W]; got {got}")
    if not decoded.is_floating_point():
        raise ValueError(f"decoded frames must be floating point (about [-1, 1]); got {decoded.dtype}")
    if torch.isnan(decoded).any():
        raise ValueError("decoded frames contain NaN values")
    x = decoded.permute(0, 2, 3, 4, 1)  # [B,3,T,H,W] -> [B,T,H,W,3]
    if not original_quirks:
        return (((x + 1) / 2).clamp(0, 1) * 255).round().to(torch.uint8)
    frames = (((x + 1) / 2).clamp(0, 1) * 255).to(torch.uint8)  # truncation toward zero
    frames = frames.flip(-1)  # RGB -> BGR
    if frames.shape[1] > 1:
        frames[:, 0] = frames[:, 1]
    return frames.contiguous()


# --------------------------------------------------------------------------------------------
# Reading images and videos
# --------------------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")


def _require_file(path, kinds: tuple[str, ...], what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} not found: {path}")
    if path.suffix.lower() not in kinds:
        raise ValueError(f"{what} {path} has an unsupported type {path.suffix!r}; accepted: {', '.join(kinds)}")
    return path


def cover_resize_crop(image, height: int, width: int):
    """Resize a PIL image with Lanczos so that it covers ``height x width`` (keeping its aspect),
    then crop the center: the original's preprocessing, without its rare 1-pixel-short bug
    (it truncated the covering size with ``int()``; here it is rounded up)."""
    from PIL import Image

    w0, h0 = image.size
    scale = max(height / h0, width / w0)
    new_w, new_h = max(width, math.ceil(w0 * scale - 1e-6)), max(height, math.ceil(h0 * scale - 1e-6))
    image = image.resize((new_w, new_h), Image.LANCZOS)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    return image.crop((left, top, left + width, top + height))


def _to_unit_range(frames: np.ndarray) -> Tensor:
    """uint8 ``[T, H, W, 3]`` -> float ``[3, T, H, W]`` in [-1, 1]."""
    x = torch.from_numpy(np.array(frames, copy=True)).float() / 255.0
    return x.permute(3, 0, 1, 2) * 2 - 1  # [T,H,W,3] -> [3,T,H,W]


def read_image(path, size: tuple[int, int] | None = None) -> Tensor:
    """An image file as ``[3, H, W]`` in [-1, 1] (RGB), optionally cover-resized and cropped to ``size``."""
    from PIL import Image, UnidentifiedImageError

    path = _require_file(path, IMAGE_SUFFIXES, "image")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None:
                im = cover_resize_crop(im, *size)
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read image {path}: it is corrupt or not an image ({exc})") from exc
    return _to_unit_range(arr[None])[:, 0]


def resample_indices(
    num_source: int, source_fps: float, num_frames: int, start_frame: int = 0, *, original: bool = False
) -> list[int]:
    """Source frame indices of ``num_frames`` frames on a 16 fps grid (nearest lower frame;
    duplicates when the source is slower than 16 fps).

    ``original=True`` uses the original training reader's formula, ``linspace(ceil(fps*start),
    min(ceil(fps*end), N) - 1, n)``, which spreads the frames over one source frame less than
    the clip spans (a 16 fps source gives 0, 0, 1, 2, 3 for 5 frames).
    """
    if original:
        start = start_frame / source_fps
        end = start + (num_frames - 1) / FPS
        first = math.ceil(source_fps * start)
        last = min(math.ceil(source_fps * end), num_source) - 1
        return [int(v) for v in np.linspace(first, last, num_frames)]
    step = source_fps / FPS
    return [min(start_frame + int(i * step + 1e-9), num_source - 1) for i in range(num_frames)]


def read_video(path, *, num_frames: int | None = None, size: tuple[int, int] | None = None) -> Tensor:
    """A video file as ``[3, T, H, W]`` in [-1, 1], resampled to 16 fps.

    ``num_frames``: how many 16 fps frames to take from the start (must be 1 + 4k and fit in the
    video); by default the longest 1 + 4k that fits. ``size``: cover-resize and crop each frame.
    """
    import av

    path = _require_file(path, VIDEO_SUFFIXES, "video")
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or FPS)
            frames = [f.to_image().convert("RGB") for f in container.decode(stream)]
    except (av.error.FFmpegError, IndexError, OSError) as exc:
        raise ValueError(f"cannot read video {path}: it is corrupt or has no video stream ({exc})") from exc
    if not frames:
        raise ValueError(f"video {path} has no frames")
    available = math.ceil(len(frames) / rate * FPS - 1e-6)  # 16 fps frame times inside the duration
    longest = 1 + 4 * ((available - 1) // 4)
    if num_frames is None:
        num_frames = longest
    if num_frames < 1 or (num_frames - 1) % 4:
        raise ValueError(f"num_frames must be 1 + 4k (1, 5, 9, ..., 81), got {num_frames}")
    if num_frames > available:
        raise ValueError(
            f"video {path} is too short: {len(frames)} frames at {rate:g} fps give {available} frames at 16 fps, "
            f"{num_frames} needed"
        )
    picked = [frames[i] for i in resample_indices(len(frames), rate, num_frames)]
    if size is not None:
        picked = [cover_resize_crop(im, *size) for im in picked]
    arr = np.stack([np.asarray(im) for im in picked])  # [T, H, W, 3] uint8
    return _to_unit_range(arr)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_video(path, frames: Tensor, *, fps: int = FPS, metadata: dict[str, str] | None = None) -> Path:
    """Write uint8 frames ``[T, H, W, 3]`` (RGB) as H.264 mp4, gif, or png (one frame).

    ``metadata`` (e.g. prompt and seed) goes into the container's tags (mp4 comment/title).
    The file is written next to its destination and renamed into place.
    """
    from ..checkpoints import atomic_write

    path = Path(path)
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    arr = frames.cpu().numpy()
    suffix = path.suffix.lower()
    if suffix == ".png":
        if arr.shape[0] != 1:
            raise ValueError(f"png holds one frame, got {arr.shape[0]}; use .mp4 or .gif for videos")
        from PIL import Image
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        for k, v in (metadata or {}).items():
            info.add_text(k, str(v))
        atomic_write(path, lambda tmp: Image.fromarray(arr[0]).save(tmp, format="PNG", pnginfo=info))
        return path
    if suffix not in (".mp4", ".gif"):
        raise ValueError(f"unsupported output type {suffix!r}; accepted: .mp4, .gif, .png")

    def _write(tmp: str) -> None:
        import av

        with av.open(tmp, mode="w", format="mp4" if suffix == ".mp4" else "gif") as container:
            for k, v in (metadata or {}).items():
                container.metadata[k] = str(v)
            if suffix == ".mp4":
                stream = container.add_stream("libx264", rate=fps)
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": "18"}
            else:
                stream = container.add_stream("gif", rate=fps)
                stream.pix_fmt = "rgb8"
            stream.height, stream.width = arr.shape[1], arr.shape[2]
            for frame in arr:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)

    atomic_write(path, _write)
    return path
