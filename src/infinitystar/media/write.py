"""Writing frames to files: H.264 mp4, gif, or png for one frame, with metadata, atomically."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from infinitystar.sizes import FPS


def write_video(path, frames: Tensor, *, fps: int = FPS, metadata: dict[str, str] | None = None) -> Path:
    """Write uint8 frames ``[T, H, W, 3]`` (RGB) as H.264 mp4, gif, or png (one frame).

    ``metadata`` (e.g. prompt and seed) goes into the container's tags (mp4 comment/title).
    The file is written next to its destination and renamed into place.
    """
    from infinitystar.files import atomic_write

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
