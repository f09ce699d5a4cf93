"""Frames as tensors: decoder output to uint8 frames, and uint8 frames to the model's [-1, 1] range."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


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


def to_unit_range(frames, *, contiguous: bool = False) -> Tensor:
    """uint8 frames ``[T, H, W, 3]`` (an array, or a list of PIL images) -> float32 ``[3, T, H, W]`` in [-1, 1].

    The values are ``x / 255 * 2 - 1`` either way. ``contiguous=False`` returns a permuted view of ``[T, H, W, 3]``
    memory, as ``read_image`` / ``read_video`` always have; ``contiguous=True`` converts into ``[3, T, H, W]`` memory
    in one copy, as the training reader always has. Each caller keeps its layout because a convolution may pick a
    different kernel, and so round differently, for each memory layout.
    """
    if isinstance(frames, (list, tuple)):
        frames = np.stack([np.asarray(im, dtype=np.uint8) for im in frames])  # T x [H, W, 3] -> [T, H, W, 3]
    if not contiguous:
        x = torch.from_numpy(np.array(frames, copy=True)).float() / 255.0
        return x.permute(3, 0, 1, 2) * 2 - 1  # [T,H,W,3] -> [3,T,H,W]
    t, h, w, _ = frames.shape
    out = torch.empty(3, t, h, w, dtype=torch.float32)
    out.copy_(torch.from_numpy(frames).permute(3, 0, 1, 2))  # [T,H,W,3] -> [3,T,H,W], uint8 -> float32
    return out.div_(255.0).mul_(2.0).sub_(1.0)
