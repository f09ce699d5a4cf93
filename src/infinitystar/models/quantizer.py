"""Bitwise spherical quantization (BSQ) over the spacetime pyramid.

A token of d channels is L2-normalised and quantised to the sign of each channel, scaled to
the unit sphere: codes are ``±1/sqrt(d)`` and the *bits* (1 where the code is positive) are
what the transformer predicts. Two widths are used: 16 bits on the small, *semantic* scales
and 64 bits on the *detail* scales.

The multi-scale residual encode runs per clip of the schedule: a running sum starts at zero;
for every step (scale, repetition) the residual ``target - running_sum`` is resampled to the
scale's size (and, for semantic scales, to 16 channels, resampling the channel axis as if it
were a spatial axis), quantised, and its codes are resampled back to the clip's full size and
added. The transformer's input at each step is the running sum area-downsampled to the step's
scale. Nothing here has parameters.

Shapes: latents are ``[B, C, t, h, w]``; bits are ``[B, t, h, w, d]`` (channels last, as the
original stores them); codes are ``[B, d, t, h, w]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from infinitystar.schedule import Scale, Schedule

LATENT_CHANNELS = 64


def resize_latent(x: torch.Tensor, channels: int, hw: tuple[int, int], mode: str) -> torch.Tensor:
    """Resample ``x [B, C, t, h, w]`` to ``[B, channels, t, *hw]``; time is never resampled.

    The channel axis is resampled like a spatial axis (the original's two-stage quantizer
    moves between 64 and 16 channels this way): ``mode='area'`` averages (64 -> 16 is a mean
    over groups of 4 channels), ``mode='trilinear'`` interpolates (align_corners=False).
    """
    b, c, t, h, w = x.shape
    if (c, h, w) == (channels, *hw):
        return x
    y = x.permute(0, 2, 1, 3, 4)  # [B, t, C, h, w]: time becomes the "channel" axis of interpolate
    if mode == "area":
        y = F.interpolate(y, size=(channels, *hw), mode="area")
    elif mode == "trilinear":
        y = F.interpolate(y, size=(channels, *hw), mode="trilinear", align_corners=False)
    else:
        raise ValueError(f"mode must be 'area' or 'trilinear', got {mode!r}")
    return y.permute(0, 2, 1, 3, 4)  # back to [B, channels, t, *hw]


def area_downsample(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Area (adaptive average) resampling of ``x [B, C, t, h, w]`` to ``[B, C, *shape]``."""
    if tuple(x.shape[-3:]) == tuple(shape):
        return x
    return F.interpolate(x, size=tuple(shape), mode="area")


def quantize_bits(x: torch.Tensor) -> torch.Tensor:
    """BSQ bits of ``x [B, d, t, h, w]``: 1 where the L2-normalised channel is > 0 (0 maps to bit 0).

    Returns int64 ``[B, t, h, w, d]``.
    """
    z = F.normalize(x.float(), dim=1)  # the original normalises before taking signs
    return (z > 0).long().permute(0, 2, 3, 4, 1)  # [B, t, h, w, d]


def bits_to_codes(bits: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Codes ``±1/sqrt(d)`` ``[B, d, t, h, w]`` from bits ``[B, t, h, w, d]``."""
    signs = bits.to(dtype) * 2 - 1  # [B, t, h, w, d] of ±1
    codes = F.normalize(signs, dim=-1)
    return codes.permute(0, 4, 1, 2, 3)  # [B, d, t, h, w]


def flip_bits(bits: torch.Tensor, prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each bit independently with probability ``prob`` (bitwise self-correction noise)."""
    if prob <= 0:
        return bits
    flips = torch.rand(bits.shape, generator=generator, device=bits.device) < prob
    return torch.where(flips, 1 - bits, bits)


@dataclass(frozen=True)
class SelfCorrection:
    """Bitwise self-correction (BSC) as the original trains it.

    For every step except those of the schedule's very last scale a flip probability
    ``p ~ U{0, 0.01, ..., strength}`` is drawn, each bit is flipped with probability p and the
    *flipped* codes feed every later input and residual, while the labels stay the clean bits.
    So the model learns to predict bits that correct earlier mistakes.
    ``strength`` is one value or one per scale index.
    """

    strength: float | tuple[float, ...] = 0.3

    def probability(self, scale: int, generator: torch.Generator | None) -> float:
        s = self.strength if isinstance(self.strength, (int, float)) else self.strength[scale]
        if s <= 0:
            return 0.0
        levels = int(round(100 * s)) + 1  # p in {0, 0.01, ..., s}
        device = None if generator is None else generator.device  # a CUDA generator draws on CUDA
        return int(torch.randint(0, levels, (1,), generator=generator, device=device).item()) / 100


@dataclass
class PyramidTokens:
    """Result of encoding a latent video over a schedule.

    ``inputs[n]``: the transformer input of step n, ``[B, 64, pt, ph, pw]``.
    ``bits[n]``: the (clean) bit labels of step n, ``[B, pt, ph, pw, d]`` int64.
    ``latent``: the quantised latent (the clips' running sums along time), ``[B, 64, t, h, w]``.
    """

    inputs: list[torch.Tensor]
    bits: list[torch.Tensor]
    latent: torch.Tensor


def _check_latent(latent: torch.Tensor, schedule: Schedule) -> None:
    if latent.ndim != 5 or latent.shape[1] != LATENT_CHANNELS:
        raise ValueError(f"latent must be [B, {LATENT_CHANNELS}, t, h, w], got {tuple(latent.shape)}")
    t, (h, w) = schedule.num_latent_frames, schedule.final_hw
    if tuple(latent.shape[2:]) != (t, h, w):
        raise ValueError(
            f"latent of shape {tuple(latent.shape[2:])} (t, h, w) does not fit the schedule, which needs {(t, h, w)}"
        )
    if not torch.isfinite(latent).all():
        raise ValueError("latent contains NaN or infinite values")


def walk_pyramid(
    latent: torch.Tensor,
    schedule: Schedule,
    step: Callable[[int, Scale, torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The multi-scale residual loop every quantiser of the pyramid shares; returns the quantised
    latent ``[B, 64, t, h, w]`` (the clips' running sums along time).

    Per clip a running sum starts at zero; for every step ``n`` (a scale's repetition) the residual
    ``target - running`` is area-resampled to the step's (bits, pt, ph, pw) and handed to
    ``step(n, scale, residual, running)``, which returns the step's codes ``[B, d, pt, ph, pw]``;
    they are trilinearly resampled to the clip's full size and added to the running sum.
    """
    sums = []
    n = 0
    for clip in range(schedule.num_clips):
        scales = schedule.clip_scales(clip)
        start, end = scales[0].frame_start, scales[0].frame_end
        _, h, w = scales[-1].shape
        target = latent[:, :, start:end]  # [B, 64, pt, h, w]: this clip's full-size latent
        running = torch.zeros_like(target)
        for sc in scales:
            d = schedule.bits(sc.index)
            for _ in range(sc.repetitions):
                residual = resize_latent(target - running, d, sc.shape[1:], "area")  # [B, d, pt, ph, pw]
                codes = step(n, sc, residual, running)
                running = running + resize_latent(codes, LATENT_CHANNELS, (h, w), "trilinear")
                n += 1
        sums.append(running)
    return torch.cat(sums, dim=2)


def encode_pyramid(
    latent: torch.Tensor,
    schedule: Schedule,
    *,
    self_correction: SelfCorrection | None = None,
    generator: torch.Generator | None = None,
) -> PyramidTokens:
    """Multi-scale residual BSQ of ``latent [B, 64, t, h, w]`` over every step of ``schedule``.

    Without ``self_correction`` this is the original's ground-truth tokenisation (teacher forcing
    for image/video conditioning); with it, the training-time corruption (labels stay clean).
    """
    _check_latent(latent, schedule)
    inputs: list[torch.Tensor] = []
    bits_out: list[torch.Tensor] = []
    last_scale = len(schedule.scales) - 1

    def step(n: int, sc: Scale, residual: torch.Tensor, running: torch.Tensor) -> torch.Tensor:
        inputs.append(area_downsample(running, sc.shape))
        bits = quantize_bits(residual)
        bits_out.append(bits)
        used = bits
        if self_correction is not None and sc.index < last_scale:
            used = flip_bits(bits, self_correction.probability(sc.index, generator), generator)
        return bits_to_codes(used, running.dtype)

    quantized = walk_pyramid(latent, schedule, step)
    return PyramidTokens(inputs, bits_out, quantized)


class RunningSum:
    """The running sum of one clip during generation: add codes, read the next step's input.

    Generation and decoding-from-bits share this so that both add codes exactly the same way.
    """

    def __init__(self, schedule: Schedule, clip: int, batch_size: int = 1, device=None, dtype=torch.float32):
        self.schedule = schedule
        self.clip = clip
        pt, h, w = schedule.clip_shape(clip)
        self.value = torch.zeros(batch_size, LATENT_CHANNELS, pt, h, w, device=device, dtype=dtype)

    def input_for(self, scale: int) -> torch.Tensor:
        """The transformer input of a step at ``scale``: the sum area-downsampled, ``[B, 64, pt, ph, pw]``."""
        return area_downsample(self.value, self.schedule.scales[scale].shape)

    def add_bits(self, bits: torch.Tensor) -> None:
        """Add the codes of ``bits [B, pt, ph, pw, d]``, upsampled to the clip's full size."""
        codes = bits_to_codes(bits, self.value.dtype)
        self.value = self.value + resize_latent(codes, LATENT_CHANNELS, tuple(self.value.shape[-2:]), "trilinear")


def decode_bits(bits: list[torch.Tensor], schedule: Schedule) -> torch.Tensor:
    """Rebuild the quantised latent ``[B, 64, t, h, w]`` from the bits of every step."""
    if len(bits) != schedule.num_steps:
        raise ValueError(f"need the bits of all {schedule.num_steps} steps, got {len(bits)}")
    sums = []
    running = None
    for step, b in zip(schedule.steps, bits):
        sc = schedule.scales[step.scale]
        expected = (*sc.shape, schedule.bits(sc.index))
        if tuple(b.shape[1:]) != expected:
            raise ValueError(f"step {step.index}: bits of shape {tuple(b.shape)} where [B, {expected}] was expected")
        if running is None or running.clip != sc.clip:
            if running is not None:
                sums.append(running.value)
            running = RunningSum(schedule, sc.clip, b.shape[0], b.device)
        running.add_bits(b)
    sums.append(running.value)
    return torch.cat(sums, dim=2)
