"""Layers of the causal video VAE: causal 3-D convolutions with exact chunked caches, per-voxel RMS norms, the
decoder's latent-modulated norms, ResNet blocks, space-time down/up-sampling and the encoder/decoder stacks.

Time is processed causally: every 3-D conv pads the past with copies of frame 0, or with the last input frames of
the previous chunk (a :data:`ConvCache`), so chunked processing gives the numbers of a single pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from infinitystar.models.config import VAEConfig

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


def _onednn_bf16_available() -> bool:
    """oneDNN's bf16 convolutions need AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT; other CPUs take PyTorch's own path."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # pragma: no cover - exotic builds
        return False


_ONEDNN_CONV = _onednn_conv_available()
_ONEDNN_BF16 = _ONEDNN_CONV and _onednn_bf16_available()


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
        and (x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and _ONEDNN_BF16))
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
