"""The causal video VAE of InfinityStar, with its absorbed 2x2 patchify and latent projections.

Data flow (released widths; every width and factor comes from :class:`VAEConfig`)::

    video [B,3,T,H,W] in [-1,1], T = 1 + 4k
      -> Encoder: causal 3-D convs, ResNet blocks with per-voxel RMS norm, DC down blocks
         (space-to-channel; the first frame is kept alone in time)       -> [B,32,t,H/8,W/8]
      -> 2x2 pixel-unshuffle per frame ("absorbed patchify")               -> [B,128,t,H/16,W/16]
      -> mean | logvar (64 + 64), std = exp(logvar.clamp(-30, 20) / 2), z = mean + std * eps
      -> proj_down (Linear 64->64 on channels-last) * scale                -> raw features [B,64,t,h,w]

    decode: / scale -> proj_up -> pixel_shuffle 2x2 -> Decoder (ResNet blocks whose norms are
    modulated by the latent, DC up blocks) -> video [B,3,1+4(t-1),16h,16w] (not clamped)

Time is processed causally: every 3-D conv pads the past with copies of frame 0, or with the
last input frames of the previous chunk, so encoding or decoding in chunks with carried caches
gives the same numbers as processing the whole sequence at once, and the memory needed is set
by the chunk size, not by the video length. The first (latent) frame is always handled alone,
so an image is a 1-frame video and a prefix of a video encodes to a prefix of its latents.

Checkpoints: the model uses clean parameter names; :func:`load_original_vae_state_dict`,
:func:`original_vae_state_dict` and :meth:`VideoVAE.from_original_checkpoint` translate from
and to the original layout (``encoder.down_blocks.0.downsamplers.0.conv.conv.conv.weight``...)
with strict key and shape coverage.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoints import (
    CheckpointError,
    check_coverage,
    read_safetensors,
    save_safetensors,
    shapes_of,
    torch_load_weights,
)
from .config import VAEConfig
from .files import atomic_write, read_json, write_json

__all__ = [
    "VideoVAE",
    "load_original_vae_state_dict",
    "original_vae_state_dict",
    "save_original_vae_checkpoint",
    "infer_vae_config",
]

#: A causal-conv cache: for every 3-D conv, the last ``k - 1`` input frames of the previous chunk.
ConvCache = dict[nn.Module, Tensor]

#: Inputs larger than this (elements) are convolved in time slices, like the original's
#: ``SafeConv3d``: some conv kernels index with 32-bit integers.
_MAX_CONV_NUMEL = 2**31 - 1


def _onednn_conv_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.aten, "mkldnn_convolution")
    except Exception:  # pragma: no cover - exotic builds
        return False


_ONEDNN_CONV = _onednn_conv_available()


def _conv3d(x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int, int]) -> Tensor:
    """``F.conv3d`` (stride 1), but on CPU inference always through oneDNN.

    PyTorch's CPU heuristic sends 3-D convs with ``N*C*T*H <= 20480`` (e.g. 16 channels, 10
    frames, 128 rows: every chunk of a small-width VAE) to its unfold+GEMM fallback, which is
    10-25x slower here. oneDNN gives the same result up to summation order.
    """
    if (
        _ONEDNN_CONV
        and torch.backends.mkldnn.enabled
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
    ):
        return torch.ops.aten.mkldnn_convolution(x, weight, bias, list(padding), [1, 1, 1], [1, 1, 1], 1)
    return F.conv3d(x, weight, bias, padding=padding)


def _inplace() -> bool:
    """In-place elementwise ops save memory but break autograd; use them only without grad."""
    return not torch.is_grad_enabled()


def _silu(x: Tensor) -> Tensor:
    return F.silu(x, inplace=_inplace())


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


class CausalConv3d(nn.Conv3d):
    """3-D convolution (stride 1) that sees only the current and past frames.

    The past of the first frame is ``k - 1`` copies of that frame (replicate-first-frame
    padding). With a ``cache`` the past is the last ``k - 1`` input frames of the previous
    chunk, so chunked processing equals whole-sequence processing. Space is zero-padded by
    ``k // 2``. A 1x1x1 conv needs no past and keeps no cache (the original stored a full copy
    of its input there).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__(in_channels, out_channels, kernel_size, padding=(0, kernel_size // 2, kernel_size // 2))
        self.time_pad = kernel_size - 1

    def forward(self, x: Tensor, cache: ConvCache | None = None) -> Tensor:  # type: ignore[override]
        p = self.time_pad
        if p:
            past = cache.get(self) if cache is not None else None
            if past is None:
                past = x[:, :, :1].expand(-1, -1, p, -1, -1)  # [B,C,p,H,W]: copies of frame 0
            x = torch.cat([past, x], dim=2)  # [B,C,p+T,H,W]
            if cache is not None:
                cache[self] = x[:, :, -p:].clone()  # a copy: a view would pin the whole chunk
        return self._conv_time_sliced(x)

    def _conv_time_sliced(self, x: Tensor) -> Tensor:
        """Convolve ``x`` (already time-padded), in time slices when it is very large."""
        p = self.time_pad
        n_out = x.shape[2] - p
        if x.numel() <= _MAX_CONV_NUMEL or n_out <= 1:
            return _conv3d(x, self.weight, self.bias, self.padding)
        per_frame = x.numel() // x.shape[2]
        step = max(1, _MAX_CONV_NUMEL // per_frame - p)
        outs = [_conv3d(x[:, :, s : s + step + p], self.weight, self.bias, self.padding) for s in range(0, n_out, step)]
        return torch.cat(outs, dim=2)


class RMSNorm(nn.Module):
    """Per-voxel RMS norm over channels: ``F.normalize(x, dim=1) * sqrt(C) * gamma``.

    No statistics over space or time, so it is exactly causal and chunk-independent.
    ``gamma`` keeps the original's (C,1,1,1) shape.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.scale = channels**0.5
        self.gamma = nn.Parameter(torch.ones(channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        # F.normalize(x, dim=1), with the norm as sqrt(sum(x^2)): linalg.vector_norm reduces
        # over the strided channel axis 10-30x slower on CPU (same value up to rounding)
        denom = x.square().sum(dim=1, keepdim=True).sqrt().clamp_min(1e-12)  # [B,1,T,H,W]
        y = x / denom
        if _inplace():
            return y.mul_(self.scale).mul_(self.gamma)
        return y * self.scale * self.gamma


@dataclass(frozen=True)
class DecoderCondition:
    """What a decoder norm is conditioned on: the decoder's input latent of this chunk and
    whether the chunk starts the video (its first latent frame then maps to one frame)."""

    z: Tensor  # [B, latent_channels, t, h, w]
    first_chunk: bool


def _modulate_broadcast(n: Tensor, y: Tensor, b: Tensor) -> Tensor:
    """``n * up(y) + up(b)`` where ``up`` is nearest upsampling by integer factors.

    Nearest upsampling by an integer factor repeats each voxel, so it is a broadcast over a
    split view: no upsampled copy of ``y``/``b`` is ever materialised.
    """
    B, C, T, H, W = n.shape
    t, h, w = y.shape[2:]
    if T % t or H % h or W % w:
        raise RuntimeError(f"decoder feature size {(T, H, W)} is not a multiple of the latent size {(t, h, w)}")
    nv = n.view(B, C, t, T // t, h, H // h, w, W // w)  # [B,C,t,st,h,sh,w,sw]
    yv = y.view(B, C, t, 1, h, 1, w, 1)
    bv = b.view(B, C, t, 1, h, 1, w, 1)
    if _inplace():
        nv.mul_(yv).add_(bv)
        return n
    return (nv * yv + bv).view(B, C, T, H, W)


class SpatialNorm(nn.Module):
    """Decoder norm: ``RMS(f) * conv_y(zq') + conv_b(zq')``, zq' = the latent resized to f
    with nearest interpolation (in the first chunk the first latent frame is resized alone:
    it maps to the single first frame, the other latent frames to the rest).

    The 1x1x1 convs commute with nearest resizing, so they run at latent resolution and the
    result is broadcast (cheaper and without full-size copies).
    """

    def __init__(self, channels: int, cond_channels: int):
        super().__init__()
        self.rms = RMSNorm(channels)
        self.to_scale = CausalConv3d(cond_channels, channels, 1)  # original: conv_y
        self.to_shift = CausalConv3d(cond_channels, channels, 1)  # original: conv_b

    def forward(self, x: Tensor, cond: DecoderCondition) -> Tensor:
        n = self.rms(x)  # [B,C,T,H,W]
        y = self.to_scale(cond.z)  # [B,C,t,h,w]
        b = self.to_shift(cond.z)
        if cond.first_chunk and n.shape[2] > 1 and y.shape[2] > 1:
            first = _modulate_broadcast(n[:, :, :1], y[:, :, :1], b[:, :, :1])
            rest = _modulate_broadcast(n[:, :, 1:], y[:, :, 1:], b[:, :, 1:])
            return n if _inplace() else torch.cat([first, rest], dim=2)
        return _modulate_broadcast(n, y, b)


class ResBlock(nn.Module):
    """norm1 -> SiLU -> conv1 -> norm2 -> SiLU -> conv2, plus the input (widths never change).

    Encoder blocks use :class:`RMSNorm`; decoder blocks use :class:`SpatialNorm` and take the
    decoder condition.
    """

    def __init__(self, channels: int, cond_channels: int | None = None):
        super().__init__()
        if cond_channels is None:
            self.norm1, self.norm2 = RMSNorm(channels), RMSNorm(channels)
        else:
            self.norm1, self.norm2 = SpatialNorm(channels, cond_channels), SpatialNorm(channels, cond_channels)
        self.conv1 = CausalConv3d(channels, channels)
        self.conv2 = CausalConv3d(channels, channels)

    def _norm(self, norm: nn.Module, x: Tensor, cond: DecoderCondition | None) -> Tensor:
        return norm(x) if cond is None else norm(x, cond)

    def forward(self, x: Tensor, cache: ConvCache | None, cond: DecoderCondition | None = None) -> Tensor:
        h = self.conv1(_silu(self._norm(self.norm1, x, cond)), cache)
        h = self.conv2(_silu(self._norm(self.norm2, h, cond)), cache)
        return h.add_(x) if _inplace() else h + x


def _space_to_channels(x: Tensor) -> Tensor:
    """[B,C,T,2H,2W] -> [B,4C,T,H,W] with channel order (ph pw c): index (2*ph + pw)*C + c."""
    B, C, T, H2, W2 = x.shape
    x = x.reshape(B, C, T, H2 // 2, 2, W2 // 2, 2)  # [B,C,T,H,ph,W,pw]
    x = x.permute(0, 4, 6, 1, 2, 3, 5)  # [B,ph,pw,C,T,H,W]
    return x.reshape(B, 4 * C, T, H2 // 2, W2 // 2)


def _mean_time_groups(x: Tensor, pt: int) -> Tensor:
    """[B,C,T,H,W] -> [B,C,T/pt,H,W]: mean over groups of ``pt`` consecutive frames."""
    if pt == 1:
        return x
    B, C, T, H, W = x.shape
    if T % pt:
        raise RuntimeError(f"{T} frames cannot be grouped by {pt}; chunks must be aligned to the compression")
    return x.reshape(B, C, T // pt, pt, H, W).mean(dim=3)  # [B,C,T/pt,pt,H,W] -> mean over pt


def _downsample_space_time(x: Tensor, pt: int, first_chunk: bool) -> Tensor:
    """2x2 space-to-channel, then time mean over groups of ``pt`` frames; in the first chunk
    frame 0 is kept alone (space-to-channel only). [B,C,T,2H,2W] -> [B,4C,T',H,W]."""
    if pt > 1 and first_chunk:
        first = _space_to_channels(x[:, :, :1])  # [B,4C,1,H,W]
        if x.shape[2] == 1:
            return first
        rest = _mean_time_groups(_space_to_channels(x[:, :, 1:]), pt)  # [B,4C,(T-1)/pt,H,W]
        return torch.cat([first, rest], dim=2)
    return _mean_time_groups(_space_to_channels(x), pt)


class DCDownsample(nn.Module):
    """DC-AE style down block: conv to ``out/4`` channels, 2x2 space-to-channel (and time mean
    over ``pt`` frames) plus a parameter-free shortcut: the same rearrangement of the input,
    averaged over channel groups (``b (g c)``, mean over g) down to ``out`` channels."""

    def __init__(self, in_channels: int, out_channels: int, compress_time: bool):
        super().__init__()
        self.out_channels = out_channels
        self.pt = 2 if compress_time else 1
        self.groups = 4 * in_channels // out_channels
        self.norm = RMSNorm(in_channels)
        self.conv = CausalConv3d(in_channels, out_channels // 4)

    def forward(self, h: Tensor, cache: ConvCache | None, first_chunk: bool) -> Tensor:
        x = self.conv(_silu(self.norm(h)), cache)  # [B,out/4,T,H,W]
        x = _downsample_space_time(x, self.pt, first_chunk)  # [B,out,T',H/2,W/2]
        s = _downsample_space_time(h, self.pt, first_chunk)  # [B,4*in,T',H/2,W/2]
        B, _, T, H, W = s.shape
        s = s.view(B, self.groups, self.out_channels, T, H, W).mean(dim=1)  # [B,g,out,...] -> [B,out,...]
        return x.add_(s) if _inplace() else x + s


def _channels_to_space_time(x: Tensor, pt: int, channels: int) -> Tensor:
    """[B,(pt ph pw c),T,H,W] -> [B,c,T*pt,2H,2W] (depth-to-space, time inner)."""
    B, _, T, H, W = x.shape
    x = x.view(B, pt, 2, 2, channels, T, H, W)  # [B,pt,ph,pw,c,T,H,W]
    x = x.permute(0, 4, 5, 1, 6, 2, 7, 3)  # [B,c,T,pt,H,ph,W,pw]
    return x.reshape(B, channels, T * pt, 2 * H, 2 * W)


class DCUpsample(nn.Module):
    """DC-AE style up block: conv to ``out*4*pt`` channels plus a shortcut that tiles the input
    channels to the same width, then depth-to-space into ``pt`` frames and 2x2 pixels. In the
    first chunk the ``pt`` frames made from latent frame 0 are averaged into one, so frame 0
    stays a single frame (T -> 1 + pt*(T-1)); later chunks give pt*T frames."""

    def __init__(self, in_channels: int, out_channels: int, compress_time: bool):
        super().__init__()
        self.out_channels = out_channels
        self.pt = 2 if compress_time else 1
        self.repeats = out_channels * 4 * self.pt // in_channels
        self.norm = RMSNorm(in_channels)
        self.conv = CausalConv3d(in_channels, out_channels * 4 * self.pt)

    def forward(self, h: Tensor, cache: ConvCache | None, first_chunk: bool) -> Tensor:
        x = self.conv(_silu(self.norm(h)), cache)  # [B,r*in,T,H,W]
        B, C, T, H, W = h.shape
        # shortcut = h tiled r times along channels; adding it before the (shared) channel
        # permutation avoids materialising the tiled copy
        xv = x.view(B, self.repeats, C, T, H, W)  # [B,r,in,T,H,W]
        x = (xv.add_(h.unsqueeze(1)) if _inplace() else xv + h.unsqueeze(1)).view(B, -1, T, H, W)  # [B,r*in,...]
        x = _channels_to_space_time(x, self.pt, self.out_channels)  # [B,out,T*pt,2H,2W]
        if first_chunk and self.pt > 1:  # frames 0..pt-1 come from latent frame 0: one frame
            if not _inplace():
                return torch.cat([x[:, :, : self.pt].mean(dim=2, keepdim=True), x[:, :, self.pt :]], dim=2)
            x[:, :, self.pt - 1] = x[:, :, : self.pt].mean(dim=2)
            x = x[:, :, self.pt - 1 :]  # a view: saves copying the whole output
        return x


class DownStage(nn.Module):
    """``layers_per_block`` ResNet blocks at one width, then an optional DC down block."""

    def __init__(self, channels: int, out_channels: int, layers: int, resample: bool, compress_time: bool):
        super().__init__()
        self.resnets = nn.ModuleList(ResBlock(channels) for _ in range(layers))
        self.downsample = DCDownsample(channels, out_channels, compress_time) if resample else None

    def forward(self, h: Tensor, cache: ConvCache | None, first_chunk: bool) -> Tensor:
        for block in self.resnets:
            h = block(h, cache)
        return self.downsample(h, cache, first_chunk) if self.downsample is not None else h


class UpStage(nn.Module):
    """``layers_per_block + 1`` conditioned ResNet blocks at one width, then an optional DC up block."""

    def __init__(
        self, channels: int, out_channels: int, layers: int, cond_channels: int, resample: bool, compress_time: bool
    ):
        super().__init__()
        self.resnets = nn.ModuleList(ResBlock(channels, cond_channels) for _ in range(layers))
        self.upsample = DCUpsample(channels, out_channels, compress_time) if resample else None

    def forward(self, h: Tensor, cache: ConvCache | None, cond: DecoderCondition) -> Tensor:
        for block in self.resnets:
            h = block(h, cache, cond)
        return self.upsample(h, cache, cond.first_chunk) if self.upsample is not None else h


def _stage_plan(cfg: VAEConfig) -> list[tuple[int, int, bool, bool]]:
    """Per down block i: (in width, out width, resamples, compresses time). Up block j mirrors
    down block n-1-j. Raises ValueError for configs this architecture cannot express."""
    ch = list(cfg.block_out_channels)
    n = len(ch) - 1
    problems = []
    if n < 1:
        problems.append(f"block_out_channels needs at least 2 entries (got {ch})")
    if any(c < 1 for c in ch):
        problems.append(f"block_out_channels must be positive (got {ch})")
    if any(f != 2 for f in cfg.spatial_compression) or any(f != 2 for f in cfg.temporal_compression):
        problems.append(
            "only factor-2 DC blocks exist: spatial_compression and temporal_compression entries must all be 2 "
            f"(got {cfg.spatial_compression}, {cfg.temporal_compression})"
        )
    if len(cfg.spatial_compression) > n:
        problems.append(f"{len(cfg.spatial_compression)} spatial compressions but only {n} down blocks")
    if len(cfg.temporal_compression) > len(cfg.spatial_compression):
        problems.append("temporal compression happens in DC blocks, so it needs as many spatial compressions")
    if cfg.layers_per_block < 0 or cfg.mid_layers < 0:
        problems.append("layers_per_block and mid_layers must be >= 0")
    plan = []
    for i in range(max(n, 0)):
        c_in, c_out = ch[i], ch[i + 1]
        resample, time = i < len(cfg.spatial_compression), i < len(cfg.temporal_compression)
        pt = 2 if time else 1
        if not resample and c_in != c_out:
            problems.append(f"down block {i} has no resampler, so its widths must be equal (got {c_in} -> {c_out})")
        if resample and (c_out % 4 or (4 * c_in) % c_out):
            problems.append(f"down block {i}: {c_out} must be a multiple of 4 and divide 4*{c_in}")
        if resample and (c_in * 4 * pt) % c_out:  # the up block mirrors it: c_out -> c_in*4*pt
            problems.append(f"up block mirroring down block {i}: 4*{pt}*{c_in} is not a multiple of {c_out}")
        plan.append((c_in, c_out, resample, time))
    if problems:
        raise ValueError("invalid VAEConfig for the InfinityStar VAE: " + "; ".join(problems))
    return plan


class Encoder(nn.Module):
    """conv_in -> down stages -> mid ResNets -> RMS -> SiLU -> conv_out (2*latent_channels)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch = cfg.block_out_channels
        self.conv_in = CausalConv3d(cfg.in_channels, ch[0])
        self.down = nn.ModuleList(
            DownStage(c_in, c_out, cfg.layers_per_block, resample, time)
            for c_in, c_out, resample, time in _stage_plan(cfg)
        )
        self.mid = nn.ModuleList(ResBlock(ch[-1]) for _ in range(cfg.mid_layers))
        self.norm_out = RMSNorm(ch[-1])
        self.conv_out = CausalConv3d(ch[-1], 2 * cfg.latent_channels)

    def forward(self, x: Tensor, cache: ConvCache | None = None, first_chunk: bool = True) -> Tensor:
        h = self.conv_in(x, cache)
        for stage in self.down:
            h = stage(h, cache, first_chunk)
        for block in self.mid:
            h = block(h, cache)
        return self.conv_out(_silu(self.norm_out(h)), cache)


class Decoder(nn.Module):
    """conv_in -> mid ResNets -> up stages -> SpatialNorm -> SiLU -> conv_out; every norm is
    conditioned on the decoder's input latent."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        rch = list(reversed(cfg.block_out_channels))
        zc = cfg.latent_channels
        self.conv_in = CausalConv3d(zc, rch[0])
        self.mid = nn.ModuleList(ResBlock(rch[0], zc) for _ in range(cfg.mid_layers))
        self.up = nn.ModuleList(
            UpStage(c_out, c_in, cfg.layers_per_block + 1, zc, resample, time)
            for c_in, c_out, resample, time in reversed(_stage_plan(cfg))
        )
        self.norm_out = SpatialNorm(rch[-1], zc)
        self.conv_out = CausalConv3d(rch[-1], cfg.out_channels)

    def forward(self, z: Tensor, cache: ConvCache | None = None, first_chunk: bool = True) -> Tensor:
        cond = DecoderCondition(z, first_chunk)
        h = self.conv_in(z, cache)
        for block in self.mid:
            h = block(h, cache, cond)
        for stage in self.up:
            h = stage(h, cache, cond)
        return self.conv_out(_silu(self.norm_out(h, cond)), cache)


# --------------------------------------------------------------------------------------------
# Absorbed patchify, chunk planning, input checks
# --------------------------------------------------------------------------------------------


def _patchify(h: Tensor) -> Tensor:
    """2x2 pixel-unshuffle per frame: [B,C,T,2h,2w] -> [B,4C,T,h,w], channel = c*4 + 2*dy + dx."""
    B, C, T, H2, W2 = h.shape
    h = h.reshape(B, C, T, H2 // 2, 2, W2 // 2, 2)  # [B,C,T,h,dy,w,dx]
    h = h.permute(0, 1, 4, 6, 2, 3, 5)  # [B,C,dy,dx,T,h,w]
    return h.reshape(B, 4 * C, T, H2 // 2, W2 // 2)


def _unpatchify(z: Tensor) -> Tensor:
    """Inverse of :func:`_patchify` (pixel_shuffle 2x2): [B,4C,T,h,w] -> [B,C,T,2h,2w]."""
    B, C4, T, h, w = z.shape
    z = z.reshape(B, C4 // 4, 2, 2, T, h, w)  # [B,C,dy,dx,T,h,w]
    z = z.permute(0, 1, 4, 5, 2, 6, 3)  # [B,C,T,h,dy,w,dx]
    return z.reshape(B, C4 // 4, T, 2 * h, 2 * w)


def _chunk_bounds(total: int, size: int) -> list[tuple[int, int]]:
    """Split ``total`` frames into chunks of ``size`` frames after the first frame, which rides
    along with the first chunk (which also takes the remainder): 17 frames by 8 -> 9, 8 as in
    the original; ``size >= total - 1`` gives one chunk. No chunk exceeds ``size + 1``."""
    if total <= 1:
        return [(0, total)]
    first = 2 + (total - 2) % size  # frame 0 plus 1..size frames
    return [(0, first)] + [(s, s + size) for s in range(first, total, size)]


def _linear_channels(x: Tensor, layer: nn.Linear) -> Tensor:
    """Apply a Linear over the channel axis: [B,C,T,H,W] -> channels-last -> back."""
    return layer(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)  # [B,T,H,W,C] -> [B,C',T,H,W]


def _check_finite(x: Tensor, what: str) -> None:
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or infinite values; only finite values are accepted")


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class VideoVAE(nn.Module):
    """InfinityStar's causal video VAE (encoder, decoder, latent projections and scale).

    Use :meth:`encode` / :meth:`decode` (run them under ``torch.inference_mode()`` for
    bounded memory); :meth:`encoder_output`, :meth:`encode_moments` and
    :meth:`features_from_moments` expose the intermediate stages. The module's dtype and
    device decide where everything runs; inputs are moved there.
    """

    def __init__(self, cfg: VAEConfig | None = None):
        super().__init__()
        cfg = cfg if cfg is not None else VAEConfig()
        _stage_plan(cfg)  # validate before building anything
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        d = cfg.token_channels
        self.proj_down = nn.Linear(d, d)
        self.proj_up = nn.Linear(d, d)
        # the original's optional second ("256-res") branch: unused, kept so checkpoints round-trip
        self.proj_down_two = nn.Linear(d, d)
        self.proj_up_two = nn.Linear(d, d)
        #: learned latent scales; only element 0 is used (encode multiplies, decode divides)
        self.latent_scales = nn.Parameter(torch.ones(4))

    # ---- geometry -------------------------------------------------------------------------

    @property
    def temporal_factor(self) -> int:
        """Video frames per latent frame after the first (4 for the released VAE)."""
        return math.prod(self.cfg.temporal_compression)

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent cell along H and W, incl. the absorbed 2x2 patchify (16)."""
        return 2 * math.prod(self.cfg.spatial_compression)

    def num_latent_frames(self, frames: int) -> int:
        """Latent frames of a ``frames``-frame video (1 + 4k -> 1 + k)."""
        return 1 + (frames - 1) // self.temporal_factor

    def num_video_frames(self, latent_frames: int) -> int:
        """The first latent frame decodes to one frame, every other one to ``temporal_factor``."""
        return 1 + self.temporal_factor * (latent_frames - 1)

    # ---- input checks -----------------------------------------------------------------------

    def _prepare_video(self, video: Tensor) -> Tensor:
        c, tf, sf = self.cfg.in_channels, self.temporal_factor, self.spatial_factor
        accepted = (
            f"a float tensor [B, {c}, T, H, W] (or [B, {c}, H, W] for images) with values in [-1, 1], "
            f"T = 1 + {tf}k frames, H and W multiples of {sf}"
        )
        if not isinstance(video, Tensor):
            raise ValueError(f"video must be {accepted}; got {type(video).__name__}")
        if video.ndim == 4:
            video = video.unsqueeze(2)  # [B,C,H,W] -> [B,C,1,H,W]
        if video.ndim != 5 or video.shape[1] != c:
            raise ValueError(f"video must be {accepted}; got shape {tuple(video.shape)}")
        if not video.is_floating_point():
            raise ValueError(f"video must be {accepted}; got dtype {video.dtype} (map uint8 frames with x/127.5 - 1)")
        B, _, T, H, W = video.shape
        if B < 1 or (T - 1) % tf:
            examples = f"1, {1 + tf}, {1 + 2 * tf}, ..."
            raise ValueError(f"video has {T} frames; accepted frame counts are 1 + {tf}k ({examples})")
        if min(H, W) < sf or H % sf or W % sf:
            raise ValueError(f"video is {H}x{W} (HxW); height and width must be positive multiples of {sf}")
        _check_finite(video, "video")
        return video.to(device=self.latent_scales.device, dtype=self.latent_scales.dtype)

    def _prepare_latent(self, latent: Tensor) -> Tensor:
        d = self.cfg.token_channels
        accepted = f"a float tensor [B, {d}, t, h, w] (raw features; use t=1 for an image: latent[:, :, None])"
        if not isinstance(latent, Tensor) or latent.ndim != 5 or latent.shape[1] != d:
            shape = tuple(latent.shape) if isinstance(latent, Tensor) else type(latent).__name__
            raise ValueError(f"latent must be {accepted}; got {shape}")
        if not latent.is_floating_point() or min(latent.shape) < 1:
            raise ValueError(f"latent must be {accepted}; got dtype {latent.dtype}, shape {tuple(latent.shape)}")
        _check_finite(latent, "latent")
        return latent.to(device=self.latent_scales.device, dtype=self.latent_scales.dtype)

    def _chunk_size(self, value: int | None, default: int, multiple: int, name: str) -> int:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % multiple:
            raise ValueError(f"{name} must be a positive multiple of {multiple} (got {value!r})")
        return value

    # ---- encode -------------------------------------------------------------------------------

    def encoder_output(self, video: Tensor, *, chunk_frames: int | None = None) -> Tensor:
        """The encoder's output before the absorbed patchify: [B, 2*latent_channels, t, H/8, W/8].

        ``chunk_frames`` (a multiple of ``temporal_factor``; default ``2 * temporal_factor`` = 8,
        as the original) bounds the frames processed at once: frame 0 rides along with the first
        chunk (17 frames -> 9 + 8), and ``chunk_frames >= T - 1`` processes the video in one go.
        Causal-conv caches carry the past across chunks, so the result does not depend on it.
        """
        video = self._prepare_video(video)
        size = self._chunk_size(chunk_frames, 2 * self.temporal_factor, self.temporal_factor, "chunk_frames")
        bounds = _chunk_bounds(video.shape[2], size)
        if len(bounds) == 1:
            return self.encoder(video)
        cache: ConvCache = {}
        outs = [self.encoder(video[:, :, s:e], cache, first_chunk=(s == 0)) for s, e in bounds]
        return torch.cat(outs, dim=2)  # [B,2*latent,t,H/8,W/8]

    def moments_from_encoder_output(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Absorbed patchify then mean | logvar split: returns (mean, std), each [B,64,t,h,w]."""
        h = _patchify(h)  # [B,4*2*latent,t,h,w]
        mean, logvar = h.chunk(2, dim=1)
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        return mean, std

    def encode_moments(self, video: Tensor, *, chunk_frames: int | None = None) -> tuple[Tensor, Tensor]:
        """Posterior (mean, std), each [B, 64, t, H/16, W/16]."""
        return self.moments_from_encoder_output(self.encoder_output(video, chunk_frames=chunk_frames))

    def features_from_moments(self, mean: Tensor, std: Tensor, eps: Tensor | None) -> Tensor:
        """Raw features ``proj_down(mean + std * eps) * scale[0]``; ``eps=None`` uses the mean."""
        z = mean if eps is None else mean + std * eps
        return _linear_channels(z, self.proj_down) * self.latent_scales[0]

    def encode(
        self,
        video: Tensor,
        *,
        sample: bool = True,
        generator: torch.Generator | None = None,
        chunk_frames: int | None = None,
    ) -> Tensor:
        """Video [B,3,T,H,W] in [-1,1] -> raw features [B,64,t,H/16,W/16], t = 1 + (T-1)/4.

        The original samples the posterior (``sample=True``); ``eps`` is one draw of the full
        latent shape from ``generator`` (on the model's device), so a seeded generator
        reproduces it. ``sample=False`` uses the posterior mean (deterministic tokens).
        """
        mean, std = self.encode_moments(video, chunk_frames=chunk_frames)
        eps = None
        if sample:
            eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return self.features_from_moments(mean, std, eps)

    # ---- decode -------------------------------------------------------------------------------

    def decoder_input(self, latent: Tensor) -> Tensor:
        """Raw features -> the decoder's latent: ``/ scale``, proj_up, pixel_shuffle 2x2.
        [B,64,t,h,w] -> [B,latent_channels,t,2h,2w]."""
        latent = self._prepare_latent(latent)
        return _unpatchify(_linear_channels(latent / self.latent_scales[0], self.proj_up))

    def decode(self, latent: Tensor, *, chunk_latents: int | None = None) -> Tensor:
        """Raw features [B,64,t,h,w] -> video [B,3,1+4(t-1),16h,16w], NOT clamped.

        The first latent frame always decodes to a single frame. ``chunk_latents`` (default 2,
        as the original) bounds the latent frames decoded at once (latent 0 rides along with the
        first chunk; ``chunk_latents >= t - 1`` decodes in one go); any value gives the same
        result, also for t = 2 (which crashes in the original). The output is preallocated and
        filled chunk by chunk.
        """
        z = self.decoder_input(latent)
        size = self._chunk_size(chunk_latents, 2, 1, "chunk_latents")
        bounds = _chunk_bounds(z.shape[2], size)
        if len(bounds) == 1:
            return self.decoder(z)
        B, _, t, h, w = z.shape
        sf = 2 ** len(self.cfg.spatial_compression)
        out = z.new_empty(B, self.cfg.out_channels, self.num_video_frames(t), h * sf, w * sf)
        cache: ConvCache = {}
        for s, e in bounds:
            frames = self.decoder(z[:, :, s:e], cache, first_chunk=(s == 0))
            start = 0 if s == 0 else self.num_video_frames(s)
            out[:, :, start : start + frames.shape[2]] = frames
            del frames
        return out

    # ---- checkpoints ----------------------------------------------------------------------------

    @classmethod
    def from_original_checkpoint(
        cls,
        path: str | os.PathLike,
        cfg: VAEConfig | None = None,
        device: str | torch.device = "cpu",
    ) -> VideoVAE:
        """Load the released ``infinitystar_videovae.pth`` (a ``torch.save`` dict whose ``"vae"``
        entry is the state dict), a ``.safetensors`` file with the original key names, or a VAE folder.

        ``cfg=None`` reads the folder's ``config.json`` or infers the widths from the weight shapes
        (:func:`infer_vae_config`). Every key and shape must match (no silent ``strict=False``).
        """
        file = vae_weights_file(path)
        if cfg is None and file.name == VAE_WEIGHTS and (file.parent / VAE_CONFIG).is_file():
            cfg = vae_config_of(file)
        state = read_original_vae_state(file)
        with torch.device("meta"):  # no throw-away random init: the weights are assigned
            model = cls(cfg if cfg is not None else infer_vae_config(state))
        load_original_vae_state_dict(model, state, assign=True)
        return model.to(device).eval()


# --------------------------------------------------------------------------------------------
# Original checkpoint layout (explicit key adapter)
# --------------------------------------------------------------------------------------------

#: Leaf renames, ours -> original; the first matching rule applies.
_LEAF_RULES = [
    (re.compile(r"^latent_scales$"), "scale_learnable_parameters"),
    (re.compile(r"\.rms\.gamma$"), ".norm_layer.gamma"),
    (re.compile(r"\.to_scale\.(weight|bias)$"), r".conv_y.conv.\1"),
    (re.compile(r"\.to_shift\.(weight|bias)$"), r".conv_b.conv.\1"),
    # CausalConv3d wraps its Conv3d as ".conv" in the original
    (re.compile(r"\.(conv_in|conv_out|conv1|conv2|conv)\.(weight|bias)$"), r".\1.conv.\2"),
]
#: Container renames, ours -> original, applied in order.
_PREFIX_RULES = [
    (re.compile(r"^encoder\.down\.(\d+)\.downsample\."), r"encoder.down_blocks.\1.downsamplers.0.conv."),
    (re.compile(r"^decoder\.up\.(\d+)\.upsample\."), r"decoder.up_blocks.\1.upsamplers.0.conv."),
    (re.compile(r"^encoder\.down\.(\d+)\."), r"encoder.down_blocks.\1."),
    (re.compile(r"^decoder\.up\.(\d+)\."), r"decoder.up_blocks.\1."),
    (re.compile(r"^(encoder|decoder)\.mid\.(\d+)\."), r"\1.mid_block.resnets.\2."),
]


def _to_original_key(key: str) -> str:
    for pattern, repl in _LEAF_RULES:
        new, n = pattern.subn(repl, key)
        if n:
            key = new
            break
    for pattern, repl in _PREFIX_RULES:
        key = pattern.sub(repl, key)
    return key


def _key_map(model: VideoVAE) -> dict[str, str]:
    """Our parameter name -> the original's, for every entry of ``model.state_dict()``."""
    names = {k: _to_original_key(k) for k in model.state_dict()}
    if len(set(names.values())) != len(names):
        raise RuntimeError("VAE key adapter is not one-to-one")  # a bug, not a user error
    return names


def _mask_shapes(cfg: VAEConfig) -> dict[str, tuple[int, ...]]:
    """The BSQ quantizers' ``mask`` buffers, registered twice (``quantizer`` / ``quantize``)."""
    dims = {"semantic": cfg.semantic_bits, "detail": cfg.detail_bits}
    return {f"{owner}.lfq_{kind}.mask": (d,) for owner in ("quantizer", "quantize") for kind, d in dims.items()}


def _bsq_mask(d: int) -> Tensor:
    """The original's ``2 ** arange(d-1, ..., 0)`` in int64 (wraps to -2**63 for d = 64)."""
    return 2 ** torch.arange(d - 1, -1, -1, dtype=torch.int64)


def load_original_vae_state_dict(model: VideoVAE, state: Mapping[str, Tensor], *, assign: bool = False) -> None:
    """Copy weights stored under the original key names into ``model``.

    The quantizer ``mask`` buffers must be present with the right shape and are dropped (the
    quantizer has no parameters). Anything else must match exactly: every expected key present,
    no unexpected key, equal shapes; otherwise :class:`CheckpointError` names the keys and the
    model is left untouched. ``assign=True`` adopts the given tensors (for a model built on the
    meta device) instead of copying into the existing ones.
    """
    names = _key_map(model)
    ours_state = model.state_dict()
    expected = {names[k]: tuple(v.shape) for k, v in ours_state.items()}
    expected.update(_mask_shapes(model.cfg))
    check_coverage(expected, shapes_of(state), "VAE checkpoint")
    not_float = [orig for orig in names.values() if not state[orig].is_floating_point()]
    if not_float:
        raise CheckpointError(f"VAE checkpoint: expected floating-point weights, got integers for {not_float[:8]}")
    # cast to the model's dtype (a no-op for the fp32 release), also when assigning
    weights = {ours: state[orig].to(ours_state[ours].dtype) for ours, orig in names.items()}
    model.load_state_dict(weights, strict=True, assign=assign)


def original_vae_state_dict(model: VideoVAE) -> dict[str, Tensor]:
    """Our weights under the original key names, incl. the quantizers' mask buffers: the
    ``"vae"`` entry of the released checkpoint format."""
    names = _key_map(model)
    out = {names[k]: v.detach() for k, v in model.state_dict().items()}
    for key, (d,) in _mask_shapes(model.cfg).items():
        out[key] = _bsq_mask(d)
    return out


def save_original_vae_checkpoint(model: VideoVAE, path: str | os.PathLike) -> None:
    """Write ``{"vae": original_vae_state_dict(model)}`` with ``torch.save`` (atomically)."""
    state = {k: v.to("cpu").contiguous() for k, v in original_vae_state_dict(model).items()}
    atomic_write(path, lambda tmp: torch.save({"vae": state}, tmp))


#: a VAE folder (inside a model folder, or a tokenizer run's export): weights with the original key names + config
VAE_WEIGHTS = "model.safetensors"
VAE_CONFIG = "config.json"
#: the names tokenizer runs used before VAE folders (still read)
_LEGACY_RUN_FILES = ("vae.safetensors", "vae_config.json")


def save_vae_folder(
    model: VideoVAE, folder: str | os.PathLike, *, dtype: torch.dtype | None = None, metadata: dict | None = None
) -> Path:
    """Write a VAE folder: ``model.safetensors`` (original key names, floating-point weights stored in
    ``dtype`` when given) and ``config.json``, each atomically. Model folders and tokenizer runs both use it,
    so any VAE the project writes loads the same way. Returns the weights' path."""
    folder = Path(folder)
    state = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
        for k, v in original_vae_state_dict(model).items()
    }
    save_safetensors(state, folder / VAE_WEIGHTS, metadata=metadata)
    write_json(folder / VAE_CONFIG, model.cfg.to_dict())
    return folder / VAE_WEIGHTS


def vae_weights_file(path: str | os.PathLike) -> Path:
    """The VAE weights a path names: a ``.pth`` / ``.safetensors`` file, a VAE folder, or a folder holding one
    (a tokenizer run or a model folder: ``vae/``), including runs written before VAE folders existed."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / VAE_WEIGHTS, path / "vae" / VAE_WEIGHTS, path / _LEGACY_RUN_FILES[0]):
            if candidate.is_file():
                return candidate
        raise CheckpointError(
            f"no VAE weights in {path}: expected {VAE_WEIGHTS} (a VAE folder), vae/{VAE_WEIGHTS} (a model folder or a "
            "tokenizer run) or a .pth / .safetensors file"
        )
    if not path.is_file():
        raise CheckpointError(f"VAE checkpoint not found: {path} (give a .pth / .safetensors file or a VAE folder)")
    return path


def vae_config_of(path: str | os.PathLike) -> VAEConfig:
    """The VAEConfig of the weights :func:`vae_weights_file` finds: the ``config.json`` beside them (or a legacy
    run's ``vae_config.json``), else inferred from the weight shapes (the released ``.pth`` has no config)."""
    file = vae_weights_file(path)
    names = (VAE_CONFIG,) if file.name == VAE_WEIGHTS else (_LEGACY_RUN_FILES[1],)
    for name in names:
        if (file.parent / name).is_file():
            return VAEConfig.from_dict(read_json(file.parent / name, "VAE config", CheckpointError))
    return infer_vae_config(read_original_vae_state(file))


def load_vae_weights(model: VideoVAE, path: str | os.PathLike) -> Path:
    """Load the weights :func:`vae_weights_file` finds into ``model``, strictly. Returns the file read."""
    file = vae_weights_file(path)
    state = read_original_vae_state(file)
    load_original_vae_state_dict(model, {k: v.to(model.latent_scales.device) for k, v in state.items()})
    return file


def read_original_vae_state(path: str | os.PathLike) -> dict[str, Tensor]:
    """The original-layout VAE state dict from a released ``.pth`` or a ``.safetensors`` file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    obj = torch_load_weights(path)
    if not isinstance(obj, Mapping) or "vae" not in obj:
        found = sorted(map(str, obj))[:20] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"{path}: expected the released VAE format, a dict with the state dict under 'vae'; found {found}"
        )
    state = obj["vae"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: the 'vae' entry is a {type(state).__name__}, not a state dict")
    return dict(state)


def _count(state: Mapping[str, Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def infer_vae_config(state: Mapping[str, Tensor]) -> VAEConfig:
    """Rebuild the VAEConfig from an original-layout state dict's shapes (widths, depths,
    which blocks resample space and time). Raises CheckpointError if keys it needs are missing."""

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointError(f"VAE checkpoint: cannot infer the architecture, missing key {key}")
        return tuple(state[key].shape)

    n_down = _count(state, r"^encoder\.down_blocks\.(\d+)\.")
    if n_down == 0:
        raise CheckpointError("VAE checkpoint: no encoder.down_blocks.* keys; is this the InfinityStar VAE?")
    ch = [shape("encoder.conv_in.conv.weight")[0]]
    n_spatial = 0
    for i in range(n_down):
        key = f"encoder.down_blocks.{i}.downsamplers.0.conv.conv.conv.weight"
        if key in state:
            n_spatial += 1
            ch.append(4 * shape(key)[0])
        else:
            ch.append(ch[-1])
    n_temporal = 0
    for j in range(n_down):
        key = f"decoder.up_blocks.{j}.upsamplers.0.conv.conv.conv.weight"
        if key in state:
            c_out = ch[n_down - 1 - j]  # up block j mirrors down block n-1-j
            n_temporal += shape(key)[0] == 8 * c_out
    return VAEConfig(
        in_channels=shape("encoder.conv_in.conv.weight")[1],
        out_channels=shape("decoder.conv_out.conv.weight")[0],
        latent_channels=shape("encoder.conv_out.conv.weight")[0] // 2,
        block_out_channels=tuple(ch),
        layers_per_block=_count(state, r"^encoder\.down_blocks\.0\.resnets\.(\d+)\."),
        spatial_compression=(2,) * n_spatial,
        temporal_compression=(2,) * n_temporal,
        mid_layers=_count(state, r"^encoder\.mid_block\.resnets\.(\d+)\."),
        semantic_bits=shape("quantizer.lfq_semantic.mask")[0],
        detail_bits=shape("quantizer.lfq_detail.mask")[0],
    )
