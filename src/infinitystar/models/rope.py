"""4-axis spacetime rotary position embedding (RoPE).

Why four axes: a visual token of the spacetime pyramid is located by *which step* produced it
(scale axis), its latent frame (time), and its row / column on the final grid (height, width).
Text tokens live on the scale axis only, at positions ``0 .. L-1``; visual tokens sit at
``rope_text_offset (512) + global step counter`` on that axis, so text and visual positions never
collide.

Layout inside one head of ``hd`` channels: ``hd / 2`` rotation pairs ``(2i, 2i + 1)``
(interleaved), split into four consecutive groups of ``hd / 8`` pairs:
``[scale | time | height | width]``. Every axis uses the same frequencies
``inv_freq[j] = theta ** -(j / (hd / 8))``; the angle of pair j of an axis is
``position * inv_freq[j]``. A pair rotates as ``x0' = x0 cos - x1 sin``, ``x1' = x1 cos + x0 sin``.

Numerics follow the original exactly: the frequencies are ``1 / theta ** (arange(0, D, 2) / D)``
with ``D = hd / 4`` in float32, the angle is one float32 product ``float32(position) * inv_freq``,
and cos / sin are taken in float32 (a float64 computation differs by ~2e-6 at position ~530).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch

from infinitystar.schedule import Schedule, rope_grid_ids

NUM_AXES = 4  #: scale, time, height, width


def axis_pairs(head_dim: int) -> int:
    """Rotation pairs per axis (``hd / 8``)."""
    if head_dim % (2 * NUM_AXES):
        raise ValueError(f"head_dim {head_dim} must be a multiple of 8 for the 4-axis RoPE")
    return head_dim // (2 * NUM_AXES)


def inv_frequencies(head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Per-axis inverse frequencies ``[hd/8]`` in float32, computed as the original does."""
    d = 2 * axis_pairs(head_dim)  # channels of one axis
    exponents = torch.arange(0, d, 2, dtype=torch.int64).float() / d  # j / (hd/8)
    return 1.0 / (theta**exponents)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos / sin ``[n, hd/2]`` (float32, CPU) for integer 4-axis positions ``[n, 4]``.

    Column ``a * hd/8 + j`` holds the angle of pair j of axis a, i.e. the pair order of the head.
    """
    if positions.ndim != 2 or positions.shape[1] != NUM_AXES:
        raise ValueError(f"positions must be [n, {NUM_AXES}], got {tuple(positions.shape)}")
    inv = inv_frequencies(head_dim, theta)  # [hd/8]
    angles = positions.to(torch.float32)[:, :, None] * inv  # [n, 4, hd/8]: one float32 product
    angles = angles.reshape(positions.shape[0], -1)  # [n, hd/2] in [scale | time | h | w] pair order
    return angles.cos(), angles.sin()


def text_positions(length: int) -> torch.Tensor:
    """4-axis positions ``[L, 4]`` of text tokens: scale axis ``0 .. L-1``, other axes 0."""
    pos = torch.zeros(length, NUM_AXES, dtype=torch.int64)
    pos[:, 0] = torch.arange(length)
    return pos


def visual_positions(
    shape: Sequence[int],
    frame_start: int,
    step_counter: int,
    final_hw: Sequence[int],
    text_offset: int = 512,
) -> torch.Tensor:
    """4-axis positions ``[pt*ph*pw, 4]`` of one scale's tokens in (t, h, w) row-major order.

    scale axis = ``text_offset + step_counter`` for every token (repetitions count), time =
    absolute latent frame, height / width = the coarse grid stretched onto the final grid.
    """
    pt, ph, pw = (int(v) for v in shape)
    frames = torch.arange(frame_start, frame_start + pt)
    rows = torch.tensor(rope_grid_ids(ph, int(final_hw[0])))
    cols = torch.tensor(rope_grid_ids(pw, int(final_hw[1])))
    t, y, x = torch.meshgrid(frames, rows, cols, indexing="ij")  # each [pt, ph, pw]
    scale = torch.full_like(t, text_offset + step_counter)
    return torch.stack([scale, t, y, x], dim=-1).reshape(-1, NUM_AXES)  # [pt*ph*pw, 4]


@lru_cache(maxsize=64)
def text_rope(length: int, head_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos / sin ``[L, hd/2]`` of text positions ``0 .. L-1`` (cached; do not modify)."""
    return rope_cos_sin(text_positions(length), head_dim, theta)


@lru_cache(maxsize=512)
def _visual_rope_cached(
    shape: tuple[int, int, int],
    frame_start: int,
    step_counter: int,
    final_hw: tuple[int, int],
    head_dim: int,
    theta: float,
    text_offset: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    pos = visual_positions(shape, frame_start, step_counter, final_hw, text_offset)
    return rope_cos_sin(pos, head_dim, theta)


def visual_rope(
    schedule: Schedule,
    scale: int,
    step_counter: int,
    head_dim: int,
    theta: float = 10000.0,
    text_offset: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos / sin ``[N, hd/2]`` of scale ``scale`` predicted at global step ``step_counter``.

    Cached per (shape, frames, step, final grid): the generation loop asks for the same tables
    at every step of every layer. The returned tensors are shared; do not modify them.
    """
    sc = schedule.scales[scale]
    return _visual_rope_cached(
        tuple(sc.shape),
        sc.frame_start,
        int(step_counter),
        tuple(schedule.final_hw),
        head_dim,
        float(theta),
        text_offset,
    )


def packed_visual_rope(
    schedule: Schedule,
    step_counters: Sequence[int],
    head_dim: int,
    theta: float = 10000.0,
    text_offset: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos / sin ``[Nvis, hd/2]`` of a training pack: every scale in order, scale s at step
    ``step_counters[s]`` (the repetition chosen for training)."""
    if len(step_counters) != len(schedule.scales):
        raise ValueError(f"need one step counter per scale ({len(schedule.scales)}), got {len(step_counters)}")
    tables = [visual_rope(schedule, s, int(n), head_dim, theta, text_offset) for s, n in enumerate(step_counters)]
    return torch.cat([c for c, _ in tables]), torch.cat([s for _, s in tables])


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of ``x [..., n, hd]`` by angles with cos / sin ``[n, hd/2]``.

    Computed in float32 and cast back to ``x.dtype`` (the original rotates bf16 q/k with fp32
    intermediates).
    """
    xf = x.float().unflatten(-1, (-1, 2))  # [..., n, hd/2, 2]: interleaved pairs (2i, 2i+1)
    x0, x1 = xf[..., 0], xf[..., 1]  # each [..., n, hd/2]
    out = torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1)  # [..., n, hd/2, 2]
    return out.flatten(-2).to(x.dtype)  # [..., n, hd]
