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

The layers are in :mod:`.layers`; the weight formats (the original key layout, the released ``.pth``,
the VAE folder) in :mod:`.checkpoint`, which :meth:`VideoVAE.from_original_checkpoint` uses.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor, nn

from infinitystar.models.config import VAEConfig
from infinitystar.models.vae.checkpoint import (
    VAE_CONFIG,
    VAE_WEIGHTS,
    infer_vae_config,
    load_original_vae_state_dict,
    read_original_vae_checkpoint,
    vae_config_of,
    vae_weights_file,
)
from infinitystar.models.vae.layers import ConvCache, Decoder, Encoder, _stage_plan

__all__ = ["VideoVAE"]

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
        (:func:`infer_vae_config`). Every weight inference needs must be there with its shape; entries known to be
        unused are skipped (one INFO line), unknown ones skipped with one warning that lists them
        (:func:`load_original_vae_state_dict`), never silently as the original's ``strict=False``.
        """
        file = vae_weights_file(path)
        if cfg is None and file.name == VAE_WEIGHTS and (file.parent / VAE_CONFIG).is_file():
            cfg = vae_config_of(file)
        state, extras = read_original_vae_checkpoint(file)
        with torch.device("meta"):  # no throw-away random init: the weights are assigned
            model = cls(cfg if cfg is not None else infer_vae_config(state))
        load_original_vae_state_dict(model, state, assign=True, extras=extras)
        return model.to(device).eval()
