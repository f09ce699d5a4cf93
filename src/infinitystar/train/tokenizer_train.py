"""Tokenizer (video VAE + BSQ) training, with knowledge inheritance from a continuous VAE.

The original never released its tokenizer trainer; what its code shows (reference section 2.6)
is followed here and every unknown is a documented, configurable choice:

- **Stage 1, ``continuous``**: the VAE alone (posterior sampled, no quantizer), L1
  reconstruction + KL to N(0, 1), optional perceptual and GAN terms.
- **Stage 2, ``quantized``**: the same VAE initialised from stage 1 (``init=``, the paper's
  knowledge inheritance) or from scratch (``from_scratch=True``, for an equal-budget
  comparison), trained with the multi-scale BSQ in the loop
  (:func:`~infinitystar.train.tokenizer_pyramid.quantize_pyramid_ste`, bit-identical codes to
  ``encode_pyramid``), stochastic quantizer depth, and the BSQ commitment / entropy terms.

One step (generator side): ``video -> encode_moments -> sample -> proj_down * scale ->
[STE pyramid] -> decode``; loss = ``l1_w * L1 + perc_w * LPIPS + kl_w * KL + q_w * BSQ_aux +
gan_w * lambda_adaptive * hinge_G`` (GAN from ``gan_start``); AdamW, grad clipping, then the
discriminator's hinge step. The learned latent scale is kept >= 0.01 (the original clamps it).

Data: any source of clips ``[3, T, H, W]`` in [-1, 1] (T = 1 + 4k): a callable ``index ->
clip``, a map-style dataset (``__len__`` + ``__getitem__``; shuffled per epoch from the seed) or
an iterable (of clips or ready batches ``[B, 3, T, H, W]``). Runs resume exactly: batches are a
function of the step (iterables are fast-forwarded unless they have ``state_dict``), and every
random draw comes from generators stored in the checkpoints
(:mod:`infinitystar.train.checkpointing`).

Outputs in the run folder: ``config.json`` (resolved), ``metrics.jsonl`` (one line per step),
``checkpoints/step_*`` (resumable), and at the end the VAE folder ``vae/`` (``model.safetensors`` with the
original key names + ``config.json``: ``VideoVAE.from_original_checkpoint`` loads it, as any model folder's VAE).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import config_dicts
from ..config import PRESETS, VAEConfig
from ..devices import resolve_device
from ..files import append_jsonl, write_json
from ..schedule import Schedule
from ..vae import VideoVAE
from ..vae_checkpoint import load_vae_weights, save_vae_folder, vae_config_of
from .checkpointing import load_latest_checkpoint, quiet_single_process, save_checkpoint
from .discriminator import DiscriminatorConfig, PatchDiscriminator
from .metrics import truncate_metrics
from .optim import LRSchedule
from .perceptual import PerceptualLoss
from .tokenizer_losses import (
    adaptive_gan_weight,
    hinge_d_loss,
    hinge_g_loss,
    kl_divergence,
    l1_loss,
    reconstruction_psnr,
)
from .tokenizer_pyramid import BSQLossConfig, draw_quantizer_depth, quantize_pyramid_ste, tokenizer_schedule

__all__ = [
    "STAGES",
    "DataConfig",
    "LossConfig",
    "QuantizerConfig",
    "OptimConfig",
    "TokenizerTrainConfig",
    "SmoothClips",
    "smooth_video",
    "ClipStream",
    "TokenizerTrainer",
]

STAGES = ("continuous", "quantized")
#: the trained tokenizer: a VAE folder (``model.safetensors`` + ``config.json``) inside the run folder
VAE_DIR = "vae"


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    """Where clips come from and their size.

    ``source``: "smooth" (random smooth videos made here: colored blobs drifting over a smooth
    background), "world" (the procedural world, :mod:`infinitystar.world`) or "media" (raw
    videos listed in ``manifest``, read through ``infinitystar.train.dataset.MediaDataset``).
    ``num_clips``: smooth: 0 = a new clip at every index, n = cycle over n clips (1 = overfit a
    single clip); world: the number of distinct items (0 = 100000). ``resolution`` (media only):
    a ``MediaDataset`` resolution such as "480p" or "scales:4" (multi-aspect buckets); default
    the fixed ``"{height}x{width}"``. ``size_range`` / ``travel_range`` (world only): the object's
    side and travel as frame fractions (``None``: the world's defaults, see ``WorldSpec``), so a
    recipe can pin the world it was trained on when the defaults move.
    """

    source: str = "smooth"
    frames: int = 17
    height: int = 32
    width: int = 32
    batch_size: int = 1
    num_clips: int = 0
    manifest: str | None = None
    resolution: str | None = None
    seed: int = 0
    size_range: tuple[float, float] | None = None
    travel_range: tuple[float, float] | None = None


@dataclass(frozen=True)
class LossConfig:
    """Loss weights. The original's released namespace shows ``l1_weight=4.0`` and zero
    perceptual / KL weights (not necessarily its training values); these defaults are a
    conventional continuous-VAE start (L1 1.0, KL 1e-6), GAN and perceptual off.

    ``perceptual_vgg`` / ``perceptual_heads``: local weight files (nothing is downloaded);
    "random" uses a seeded random VGG16 (tests, experiments). ``perceptual_frames``: frames
    per clip compared (0 = all). ``gan_start``: first step with the adversarial term (the
    discriminator trains from then on too). ``adaptive_gan_weight``: VQGAN's gradient balance
    at the decoder's last layer, times ``gan_weight``.
    """

    l1_weight: float = 1.0
    #: mean squared error weight: L1 alone pulls uncertain pixels to their median, which on mostly-background
    #: clips (the procedural world) is the background, so small objects vanish early in training; an L2 term
    #: gives them a gradient until they are placed
    l2_weight: float = 0.0
    kl_weight: float = 1e-6
    quantizer_weight: float = 1.0
    perceptual_weight: float = 0.0
    perceptual_vgg: str | None = None
    perceptual_heads: str | None = None
    perceptual_frames: int = 4
    gan_weight: float = 0.0
    gan_start: int = 0
    adaptive_gan_weight: bool = True


@dataclass(frozen=True)
class QuantizerConfig:
    """The quantizer in the loop (stage 2).

    ``skip_detail_prob``: stochastic quantizer depth, the probability that a sample drops a
    random suffix of the detail scales (see ``draw_quantizer_depth``; the original's value is
    unknown). ``repetitions`` / ``detail_scale_min_tokens`` / ``frames_per_clip``: the
    schedule (see ``tokenizer_schedule``; None = released values at released sizes, else 1 /
    350). ``sample_posterior``: quantise a posterior sample (as the original) or the mean.
    ``fit_scale``: before the first step of a quantized run that inherits a VAE (``init``), set
    the learned latent scale to the value the pyramid quantises best
    (``TokenizerTrainer.fit_latent_scale``; from scratch the features are random, nothing to fit).
    The rest are the BSQ auxiliary-loss weights (``BSQLossConfig``).
    """

    skip_detail_prob: float = 0.25
    repetitions: int | None = None
    detail_scale_min_tokens: int | None = None
    frames_per_clip: int = 20
    sample_posterior: bool = True
    fit_scale: bool = True
    commit_weight: float = 0.25
    entropy_weight: float = 0.1
    sample_gamma: float = 1.0
    codebook_gamma: float = 1.0
    inv_temperature: float = 100.0

    def bsq(self) -> BSQLossConfig:
        return BSQLossConfig(
            self.commit_weight, self.entropy_weight, self.sample_gamma, self.codebook_gamma, self.inv_temperature
        )


@dataclass(frozen=True)
class OptimConfig:
    """AdamW for the VAE (the original's tokenizer namespace: lr 1e-4, betas (0.9, 0.95), clip 1.0),
    linear warmup then constant or cosine decay to ``min_lr_ratio * lr``; the discriminator
    uses the same settings with ``disc_lr`` (default: ``lr``)."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    warmup_steps: int = 0
    decay: str = "constant"
    min_lr_ratio: float = 0.1
    disc_lr: float | None = None


@dataclass(frozen=True)
class TokenizerTrainConfig:
    """A tokenizer training recipe (JSON: nested objects with these field names).

    ``vae``: the VAE widths (JSON: a preset name such as "tiny", or VAEConfig fields; None =
    taken from the ``init`` checkpoint, else the released widths). ``chunk_frames``: frames
    encoded at once (None = the whole clip). ``freeze``: parts kept fixed ("encoder",
    "decoder", or "tokens": everything the tokens depend on, the encoder, the projection
    before the quantizer and the latent scale; with ``quantizer.sample_posterior`` false and
    ``skip_detail_prob`` 0 the decoder then trains on exactly the tokens a latent cache already
    holds, so a transformer trained on that cache stays valid). ``save_every``: checkpoint
    interval (the last step is always saved); ``keep``: checkpoints kept.
    """

    vae: VAEConfig | None = None
    stage: str = "continuous"
    steps: int = 1000
    seed: int = 0
    device: str = "cpu"
    save_every: int = 500
    keep: int = 2
    chunk_frames: int | None = None
    freeze: tuple[str, ...] = ()
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)

    def __post_init__(self) -> None:
        problems = []
        if self.stage not in STAGES:
            problems.append(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.steps < 1:
            problems.append(f"steps must be >= 1, got {self.steps}")
        if self.save_every < 1 or self.keep < 1:
            problems.append("save_every and keep must be >= 1")
        bad = [f for f in self.freeze if f not in FREEZABLE]
        if bad:
            problems.append(f"freeze accepts {', '.join(map(repr, FREEZABLE))}, got {bad}")
        d = self.data
        if d.frames < 1 or (d.frames - 1) % 4:
            problems.append(f"data.frames must be 1 + 4k (1, 5, 9, 17, ...), got {d.frames}")
        if d.height < 16 or d.width < 16 or d.height % 16 or d.width % 16:
            problems.append(f"data.height/width must be positive multiples of 16, got {d.height}x{d.width}")
        if d.batch_size < 1:
            problems.append(f"data.batch_size must be >= 1, got {d.batch_size}")
        if d.source not in ("smooth", "world", "media"):
            problems.append(f"data.source must be 'smooth', 'world' or 'media', got {d.source!r}")
        if self.optim.decay not in ("constant", "cosine"):
            problems.append(f"optim.decay must be 'constant' or 'cosine', got {self.optim.decay!r}")
        if self.optim.lr <= 0 or not 0 <= self.quantizer.skip_detail_prob <= 1:
            problems.append("optim.lr must be > 0 and quantizer.skip_detail_prob in [0, 1]")
        weights = asdict(self.loss)
        negative = [k for k, v in weights.items() if k.endswith("_weight") and isinstance(v, float) and v < 0]
        if negative:
            problems.append(f"loss weights must be >= 0: {negative}")
        if problems:
            raise ValueError("invalid tokenizer training config: " + "; ".join(problems))

    # ---- JSON -------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TokenizerTrainConfig:
        d = dict(d)
        vae = d.get("vae")
        if isinstance(vae, str):
            if vae not in PRESETS:
                raise ValueError(f"unknown VAE preset {vae!r}; accepted: {', '.join(PRESETS)} or VAEConfig fields")
            d["vae"] = asdict(PRESETS[vae].vae)
        return config_dicts.from_dict(cls, d, what="tokenizer training config")

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> TokenizerTrainConfig:
        from .config import read_recipe

        return cls.from_dict(read_recipe(path))

    def replace(self, **changes) -> TokenizerTrainConfig:
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def smooth_video(generator: torch.Generator, frames: int, height: int, width: int, blobs: int = 3) -> Tensor:
    """A random smooth video ``[3, T, H, W]`` in [-1, 1]: colored Gaussian blobs drifting in
    straight lines over a smooth color field. Cheap, seeded, and with real structure (edges,
    motion) for a tokenizer to learn."""
    g = generator
    coarse = torch.rand(1, 3, 3, 3, generator=g) * 1.2 - 0.6  # [1, 3, 3, 3] low-frequency background
    bg = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)[0]
    video = bg.unsqueeze(1).expand(3, frames, height, width).clone()  # [3, T, H, W]
    yy = torch.arange(height, dtype=torch.float32).view(1, height, 1)
    xx = torch.arange(width, dtype=torch.float32).view(1, 1, width)
    t = torch.arange(frames, dtype=torch.float32).view(frames, 1, 1)
    for _ in range(blobs):
        color = torch.rand(3, generator=g) * 2 - 1
        radius = (0.08 + 0.12 * torch.rand((), generator=g)) * min(height, width)
        cy, cx = torch.rand(2, generator=g) * torch.tensor([height, width])
        vy, vx = (torch.rand(2, generator=g) * 2 - 1) * 0.6  # pixels per frame
        d2 = (yy - (cy + vy * t)) ** 2 + (xx - (cx + vx * t)) ** 2  # [T, H, W]
        alpha = torch.exp(-d2 / (2 * radius**2)).unsqueeze(0)  # [1, T, H, W]
        video = video * (1 - alpha) + color.view(3, 1, 1, 1) * alpha
    return video.clamp(-1, 1)


@dataclass(frozen=True)
class SmoothClips:
    """``index -> smooth_video`` deterministically from ``(seed, index)``; ``num_clips > 0``
    cycles over that many distinct clips."""

    frames: int = 17
    height: int = 32
    width: int = 32
    seed: int = 0
    num_clips: int = 0

    def __call__(self, index: int) -> Tensor:
        if self.num_clips > 0:
            index %= self.num_clips
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        return smooth_video(g, self.frames, self.height, self.width)


def _as_clip(item: Any) -> Tensor:
    """A data item as a float video tensor: a tensor, ``(video, ...)``, ``{"video": ...}`` or ``.video``."""
    if isinstance(item, Mapping):
        item = item.get("video", item.get("frames"))
    elif isinstance(item, (tuple, list)) and item and isinstance(item[0], Tensor):
        item = item[0]
    elif not isinstance(item, Tensor) and hasattr(item, "video"):
        item = item.video
    if not isinstance(item, Tensor):
        raise ValueError(
            "a data item must be a video tensor [3, T, H, W] (or a batch [B, 3, T, H, W]), a (video, ...) tuple, "
            f"a dict with 'video', or an object with .video; got {type(item).__name__}"
        )
    return item


class ClipStream:
    """Batches ``[B, 3, T, H, W]`` from a data source, as a function of the step (exact resume).

    - callable ``index -> clip``: batch s holds indices ``s*B .. s*B+B-1``;
    - map-style dataset (``__len__`` + ``__getitem__``): the same, through a permutation drawn
      from ``(seed, epoch)`` (every clip once per epoch);
    - iterable: consumed in order; on resume it is fast-forwarded (or restored through its own
      ``state_dict`` when it has one). Items that are already batches are used as they are.
    """

    def __init__(self, source: Any, batch_size: int, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.source = source
        self.batch_size = batch_size
        self.seed = seed
        self.map_style = (
            hasattr(source, "__getitem__") and hasattr(source, "__len__") and not isinstance(source, Tensor)
        )
        self.callable = callable(source) and not self.map_style
        if not (self.map_style or self.callable or isinstance(source, Iterable)):
            raise ValueError(
                "data source must be a callable index -> clip, a map-style dataset or an iterable of clips; "
                f"got {type(source).__name__}"
            )
        self._iter: Iterator | None = None
        self._consumed = 0  # iterable items taken so far
        self._perm: tuple[int, Tensor] | None = None

    def _item(self, index: int) -> Tensor:
        if self.callable:
            return _as_clip(self.source(index))
        n = len(self.source)
        if n == 0:
            raise ValueError("the dataset is empty")
        epoch, pos = divmod(index, n)
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._perm = (epoch, torch.randperm(n, generator=g))
        return _as_clip(self.source[int(self._perm[1][pos])])

    def _next(self) -> Tensor:
        if self._iter is None:
            self._iter = iter(self.source)
        try:
            item = next(self._iter)
        except StopIteration:  # another pass over the data
            self._iter = iter(self.source)
            try:
                item = next(self._iter)
            except StopIteration:
                raise ValueError("the data source yielded no clips") from None
        self._consumed += 1
        return _as_clip(item)

    def batch(self, step: int) -> Tensor:
        """The batch of (0-based) step ``step``."""
        if self.map_style or self.callable:
            clips = [self._item(step * self.batch_size + j) for j in range(self.batch_size)]
        else:
            first = self._next()
            if first.ndim == 5:  # the source batches itself
                return first
            clips = [first] + [self._next() for _ in range(self.batch_size - 1)]
        shapes = {tuple(c.shape) for c in clips}
        if len(shapes) != 1 or clips[0].ndim != 4:
            raise ValueError(
                f"clips in a batch must all be [3, T, H, W] of one shape, got {sorted(shapes)} "
                "(use batch_size 1 or a source that buckets clips by size)"
            )
        return torch.stack(clips)  # [B, 3, T, H, W]

    def state_dict(self) -> dict:
        state: dict[str, Any] = {"consumed": self._consumed}
        if not (self.map_style or self.callable) and hasattr(self.source, "state_dict"):
            state["source"] = self.source.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.map_style or self.callable:
            return
        if "source" in state and hasattr(self.source, "load_state_dict"):
            self.source.load_state_dict(state["source"])
            self._iter, self._consumed = None, int(state["consumed"])
            return
        self._iter, self._consumed = None, 0
        for _ in range(int(state["consumed"])):  # replay: exact for any deterministic iterable
            self._next()


def _check_video(video: Tensor) -> Tensor:
    if video.ndim != 5 or video.shape[1] != 3 or not video.is_floating_point():
        raise ValueError(f"training clips must be float [B, 3, T, H, W] in [-1, 1], got {video.dtype} {video.shape}")
    if not torch.isfinite(video).all():
        raise ValueError("a training clip contains NaN or infinite values")
    lo, hi = float(video.min()), float(video.max())
    if lo < -1.001 or hi > 1.001:
        raise ValueError(f"training clips must lie in [-1, 1] (map uint8 with x / 127.5 - 1), got [{lo:.3f}, {hi:.3f}]")
    return video


class MediaClips:
    """Endless batches ``[B, 3, T, H, W]`` from a :class:`~infinitystar.train.dataset.MediaDataset`
    (one bucket per batch, epoch after epoch), resumable through the dataset's own state."""

    def __init__(self, dataset: Any):
        if len(dataset) == 0:
            raise ValueError("the media dataset has no complete batch: add clips or lower data.batch_size")
        self.dataset = dataset

    def __iter__(self) -> Iterator[Tensor]:
        epoch = self.dataset.epoch
        while True:
            self.dataset.set_epoch(epoch)  # keeps a position restored by load_state_dict
            for batch in self.dataset:
                yield torch.stack([sample.video for sample in batch])  # [B, 3, T, H, W]
            epoch += 1

    def state_dict(self) -> dict:
        return self.dataset.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.dataset.load_state_dict(dict(state))


def build_data_source(cfg: DataConfig) -> Any:
    """The data source a :class:`DataConfig` names (see its docstring).

    "world": ``infinitystar.world.WorldDataset`` items at ``frames`` x ``height`` x ``width``
    (``num_clips`` items, default 100000, reshuffled every epoch). "media": a
    ``MediaDataset`` over ``manifest`` at ``resolution`` (default ``"{height}x{width}"``),
    every clip ``frames`` long, batches of one size bucket.
    """
    if cfg.source == "smooth":
        return SmoothClips(cfg.frames, cfg.height, cfg.width, cfg.seed, cfg.num_clips)
    if cfg.source == "world":
        from ..world import WorldDataset, WorldSpec

        spec = WorldSpec.with_ranges(cfg.frames, (cfg.height, cfg.width), cfg.size_range, cfg.travel_range)
        return WorldDataset(cfg.num_clips if cfg.num_clips > 0 else 100_000, seed=cfg.seed, spec=spec)
    if cfg.source == "media":
        if not cfg.manifest:
            raise ValueError("data.source 'media' needs data.manifest (CLI: --data <manifest file>)")
        from .dataset import MediaDataset

        resolution = cfg.resolution if cfg.resolution is not None else f"{cfg.height}x{cfg.width}"
        ds = MediaDataset(
            cfg.manifest, resolution=resolution, batch_size=cfg.batch_size, seed=cfg.seed, num_frames=cfg.frames
        )
        return MediaClips(ds)
    raise ValueError(f"unknown data source {cfg.source!r}; accepted: 'smooth', 'world', 'media'")


# --------------------------------------------------------------------------------------------
# Weights in and out
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------


FREEZABLE = ("encoder", "decoder", "tokens")


def _frozen_parts(vae: VideoVAE, part: str) -> list[torch.nn.Module | torch.nn.Parameter]:
    """The modules / parameters ``freeze`` entry ``part`` keeps fixed (see ``TokenizerTrainConfig``)."""
    if part == "tokens":  # features = proj_down(encoder moments) * latent_scales[0]: all three fix the bits
        return [vae.encoder, vae.proj_down, vae.latent_scales]
    return [getattr(vae, part)]


def _init_adam_state(opt: torch.optim.Optimizer) -> None:
    """Create AdamW's per-parameter state up front, exactly as its first step would (step 0, zero
    moments), so that checkpoints always hold the same keys: a checkpoint written before a
    parameter's first update (e.g. the discriminator before ``gan_start``) then loads into a
    fresh optimizer."""
    for group in opt.param_groups:
        for p in group["params"]:
            if not opt.state[p]:
                opt.state[p] = {
                    "step": torch.tensor(
                        0.0, dtype=torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
                    ),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }


class TokenizerTrainer:
    """Trains a :class:`~infinitystar.vae.VideoVAE` as a continuous VAE or as the BSQ tokenizer.

    ``data``: a data source (see :class:`ClipStream`; None builds the one ``cfg.data`` names).
    ``init``: VAE weights to start from (a file or a run folder); required for the quantized
    stage unless ``from_scratch=True`` (an explicit choice, so that inheritance is never
    skipped by accident). ``run_dir``: where checkpoints, metrics and the final VAE go.
    """

    def __init__(
        self,
        cfg: TokenizerTrainConfig,
        run_dir: str | os.PathLike,
        data: Any = None,
        *,
        init: str | os.PathLike | None = None,
        from_scratch: bool = False,
        progress: bool = True,
    ):
        if cfg.stage == "quantized" and init is None and not from_scratch:
            raise ValueError(
                "the quantized stage inherits a continuous VAE: pass init=<stage-1 VAE checkpoint or run folder> "
                "(CLI: --init), or from_scratch=True (CLI: --from-scratch) to train the tokenizer without inheritance"
            )
        if init is not None and from_scratch:
            raise ValueError("init and from_scratch exclude each other: choose one")
        vae_cfg = cfg.vae
        if vae_cfg is None:
            vae_cfg = vae_config_of(init) if init is not None else VAEConfig()
            cfg = cfg.replace(vae=vae_cfg)
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = resolve_device(cfg.device)
        self.quantized = cfg.stage == "quantized"
        self.progress = progress

        with torch.random.fork_rng(devices=[]):  # module init draws from the global generator: seed it, privately
            torch.manual_seed(cfg.seed)
            vae = VideoVAE(vae_cfg)
        self.vae = vae.to(self.device)
        self.init_file = load_vae_weights(self.vae, init) if init is not None else None
        for part in cfg.freeze:
            for module in _frozen_parts(self.vae, part):
                module.requires_grad_(False)
        self.vae.train()
        # the original's optional second branch (proj_*_two) is never used: not trained
        params = [p for n, p in self.vae.named_parameters() if p.requires_grad and "_two." not in n]
        oc = cfg.optim
        self.optimizer = torch.optim.AdamW(params, lr=oc.lr, betas=oc.betas, weight_decay=oc.weight_decay)
        _init_adam_state(self.optimizer)
        self.lr_schedule = schedule = LRSchedule(oc.lr, oc.decay, oc.warmup_steps, cfg.steps, oc.min_lr_ratio)
        # LambdaLR counts from 0 (its value at i is the lr of optimizer step i + 1), the schedule from 1
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda i: schedule.factor(i + 1))

        lc = cfg.loss
        self.perceptual: PerceptualLoss | None = None
        if lc.perceptual_weight > 0:
            if lc.perceptual_vgg is None:
                raise ValueError(
                    "loss.perceptual_weight > 0 needs loss.perceptual_vgg: a local VGG16 weight file "
                    "(features.* keys; nothing is downloaded) or 'random' for a seeded random network"
                )
            if lc.perceptual_vgg == "random":
                self.perceptual = PerceptualLoss.random(cfg.seed)
            else:
                self.perceptual = PerceptualLoss.from_files(lc.perceptual_vgg, lc.perceptual_heads)
            self.perceptual.to(self.device)
        self.disc: PatchDiscriminator | None = None
        self.disc_optimizer = None
        if lc.gan_weight > 0:
            self.disc = PatchDiscriminator(cfg.discriminator, seed=cfg.seed).to(self.device).train()
            self.disc_optimizer = torch.optim.AdamW(
                self.disc.parameters(),
                lr=oc.disc_lr if oc.disc_lr is not None else oc.lr,
                betas=oc.betas,
                weight_decay=oc.weight_decay,
            )
            _init_adam_state(self.disc_optimizer)

        self.stream = ClipStream(
            data if data is not None else build_data_source(cfg.data), cfg.data.batch_size, cfg.seed
        )
        self.generator = torch.Generator().manual_seed(cfg.seed)  # control draws (depth, frames), CPU
        self.noise_generator = torch.Generator(self.device).manual_seed(cfg.seed + 1)  # posterior noise
        self.step = 0
        self._schedules: dict[tuple[int, int, int], Schedule] = {}
        self._peeked: tuple[int, Tensor] | None = None
        self.fitted_latent_scale: float | None = None

    # ---- state ------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything a checkpoint holds (``train.checkpointing`` adds the global RNG states)."""
        state: dict[str, Any] = {
            "vae": self.vae,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "generator": self.generator,
            "noise_generator": self.noise_generator,
            "data": self.stream,
        }
        if self.disc is not None:
            state["discriminator"] = self.disc
            state["disc_optimizer"] = self.disc_optimizer
        return state

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    def schedule_for(self, t: int, h: int, w: int) -> Schedule:
        """The pyramid for a latent of ``(t, h, w)`` (cached; see ``tokenizer_schedule``)."""
        key = (t, h, w)
        if key not in self._schedules:
            q = self.cfg.quantizer
            self._schedules[key] = tokenizer_schedule(
                t,
                h,
                w,
                repetitions=q.repetitions,
                detail_scale_min_tokens=q.detail_scale_min_tokens,
                frames_per_clip=q.frames_per_clip,
            )
        return self._schedules[key]

    # ---- one step ---------------------------------------------------------------------------

    def _chunks(self, frames: int) -> tuple[int, int]:
        """(chunk_frames, chunk_latents) for encode / decode: the whole clip unless configured."""
        tf = self.vae.temporal_factor
        if self.cfg.chunk_frames is not None:
            return self.cfg.chunk_frames, max(1, self.cfg.chunk_frames // tf)
        t = self.vae.num_latent_frames(frames)
        return max(tf, frames - 1), max(1, t - 1)

    def forward(self, video: Tensor, *, train: bool = True) -> dict[str, Any]:
        """Encode -> (quantise) -> decode one batch; returns the reconstruction and the loss terms."""
        q = self.cfg.quantizer
        chunk_frames, chunk_latents = self._chunks(video.shape[2])
        mean, std = self.vae.encode_moments(video, chunk_frames=chunk_frames)  # [B, 64, t, h, w] each
        eps = None
        if q.sample_posterior or not self.quantized:
            eps = torch.randn(mean.shape, generator=self.noise_generator, device=mean.device, dtype=mean.dtype)
        z = self.vae.features_from_moments(mean, std, eps)  # raw features [B, 64, t, h, w]
        out: dict[str, Any] = {"mean": mean, "std": std}
        if self.quantized:
            sched = self.schedule_for(*z.shape[2:])
            prob = q.skip_detail_prob if train else 0.0
            keep = draw_quantizer_depth(sched, z.shape[0], prob, self.generator)
            qo = quantize_pyramid_ste(z, sched, keep=keep, config=q.bsq())
            out["quant"] = qo
            z = qo.latent
        out["recon"] = self.vae.decode(z, chunk_latents=chunk_latents)  # [B, 3, T, H, W]
        return out

    def _batch(self) -> Tensor:
        """This step's batch, on the device (a batch peeked by :meth:`fit_latent_scale` is reused)."""
        if self._peeked is not None and self._peeked[0] == self.step:
            video, self._peeked = self._peeked[1], None
        else:
            video = self.stream.batch(self.step)
        return _check_video(video).to(self.device)

    @torch.no_grad()
    def fit_latent_scale(self) -> float:
        """Set the learned latent scale to the value the pyramid quantises best, before stage 2 starts.

        A continuous VAE's features have no reason to match the BSQ codes' magnitude (unit-norm
        codes per step), and the scale, learned with the rest, would take many steps to move.
        So on this step's batch (posterior mean, no random draw) the scale ``s`` is chosen on a
        grid ``2^(j/4)``, ``s in [1/64, 4]``, to minimise the decoder-side error
        ``|Q(s z) / s - z|`` of the un-scaled features z. Returns the chosen scale.
        """
        video = self.stream.batch(self.step)
        self._peeked = (self.step, video)  # the first training step uses this very batch
        video = _check_video(video).to(self.device)
        was_training = self.vae.training
        self.vae.eval()
        try:
            chunk_frames, _ = self._chunks(video.shape[2])
            base = self.vae.encode(video, sample=False, chunk_frames=chunk_frames) / self.vae.latent_scales[0]
        finally:
            self.vae.train(was_training)
        sched = self.schedule_for(*base.shape[2:])
        cfg = self.cfg.quantizer.bsq()
        best, best_err = 1.0, math.inf
        for j in range(-24, 9):
            s = 2.0 ** (j / 4)
            err = float((quantize_pyramid_ste(base * s, sched, config=cfg).latent / s - base).norm())
            if err < best_err:
                best, best_err = s, err
        self.vae.latent_scales[0] = best
        return self.vae.latent_scales[0].item()

    def train_step(self) -> dict[str, Any]:
        """One optimisation step of the VAE (and of the discriminator once the GAN is on)."""
        lc = self.cfg.loss
        t0 = time.perf_counter()
        video = self._batch()
        out = self.forward(video)
        recon = out["recon"]
        l1 = l1_loss(recon, video)
        rec = lc.l1_weight * l1
        m: dict[str, Any] = {"step": self.step + 1, "l1": l1.item()}
        if lc.l2_weight:
            l2 = (recon.float() - video.float()).pow(2).mean()
            rec = rec + lc.l2_weight * l2
            m["l2"] = l2.item()
        if self.perceptual is not None:
            perc = self.perceptual(recon, video, frames=lc.perceptual_frames, generator=self.generator)
            rec = rec + lc.perceptual_weight * perc
            m["perceptual"] = perc.item()
        loss = rec
        if lc.kl_weight > 0:
            kl = kl_divergence(out["mean"], out["std"])
            loss = loss + lc.kl_weight * kl
            m["kl"] = kl.item()
        if "quant" in out:
            qo = out["quant"]
            loss = loss + lc.quantizer_weight * qo.loss
            m.update(
                bsq_loss=qo.loss.item(),
                commit=qo.commit,
                sample_entropy=qo.sample_entropy,
                codebook_entropy=qo.codebook_entropy,
                bit_usage=qo.bit_usage,
                kept_steps=float(qo.keep.float().mean()),
            )
        gan_on = self.disc is not None and self.step >= lc.gan_start
        if gan_on:
            self.disc.requires_grad_(False)
            g_loss = hinge_g_loss(self.disc(recon))
            last = self.vae.decoder.conv_out.weight
            weight = torch.ones(())
            if lc.adaptive_gan_weight and last.requires_grad:
                weight = adaptive_gan_weight(rec, g_loss, last)
            loss = loss + lc.gan_weight * weight * g_loss
            m.update(g_loss=g_loss.item(), gan_weight=float(weight))
        if not torch.isfinite(loss):
            raise RuntimeError(
                f"the loss became {loss.item()} at step {self.step + 1}; lower optim.lr or check the data"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():  # the original uses clamp(scale, min=0.01)
            self.vae.latent_scales[0].clamp_(min=0.01)
        if gan_on:
            self.disc.requires_grad_(True)
            fake = recon.detach()
            d_loss = hinge_d_loss(self.disc(video), self.disc(fake))
            self.disc_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            torch.nn.utils.clip_grad_norm_(self.disc.parameters(), self.cfg.optim.grad_clip)
            self.disc_optimizer.step()
            m["d_loss"] = d_loss.item()
        m.update(
            loss=loss.item(),
            psnr=reconstruction_psnr(recon, video),
            grad_norm=float(grad_norm),
            lr=self.optimizer.param_groups[0]["lr"],
            latent_scale=self.vae.latent_scales[0].item(),
            seconds=time.perf_counter() - t0,
        )
        self.step += 1
        return m

    # ---- the loop -----------------------------------------------------------------------------

    def _write_config(self, init: Path | None) -> None:
        record = {"config": self.cfg.to_dict(), "init": str(init) if init is not None else None}
        if self.fitted_latent_scale is not None:
            record["fitted_latent_scale"] = self.fitted_latent_scale
        write_json(self.run_dir / "config.json", record, sort_keys=True)

    def resume(self) -> int | None:
        """Load the newest complete checkpoint of the run folder; returns its step (None if none)."""
        with quiet_single_process():
            step = load_latest_checkpoint(self.checkpoint_dir, self.state())
        if step is not None:
            self.step = int(step)
            self._schedules.clear()
        return step

    def save(self) -> Path:
        with quiet_single_process():
            return save_checkpoint(self.checkpoint_dir, self.step, self.state(), keep=self.cfg.keep)

    def fit(self, steps: int | None = None, *, resume: bool = False) -> list[dict[str, Any]]:
        """Train until ``steps`` (default ``cfg.steps``) and export the VAE; returns this call's metrics.

        ``resume=True`` continues from the newest checkpoint in the run folder; without it a run
        folder that already holds checkpoints is refused (so nothing is silently overwritten).
        """
        steps = self.cfg.steps if steps is None else int(steps)
        if resume:
            start = self.resume()
            # lines written after the checkpoint this run restarts from
            truncate_metrics(self.metrics_path, start if start is not None else 0)
        elif self.checkpoint_dir.is_dir() and any(self.checkpoint_dir.iterdir()):
            raise ValueError(f"{self.run_dir} already holds checkpoints: resume it (--resume) or choose a new --out")
        else:
            self.metrics_path.unlink(missing_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fit = self.cfg.quantizer.fit_scale and "tokens" not in self.cfg.freeze  # a frozen scale stays as inherited
        if self.quantized and fit and self.init_file is not None and self.step == 0:
            self.fitted_latent_scale = self.fit_latent_scale()
        self._write_config(self.init_file)
        history: list[dict[str, Any]] = []
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=self.step, disable=not self.progress, desc=f"tokenizer ({self.cfg.stage})")
        with self.metrics_path.open("a") as log:
            while self.step < steps:
                m = self.train_step()
                history.append(m)
                append_jsonl(log, m)
                post = {"loss": f"{m['loss']:.4f}", "l1": f"{m['l1']:.4f}", "psnr": f"{m['psnr']:.2f}"}
                if "bit_usage" in m:
                    post["bits"] = f"{m['bit_usage']:.3f}"
                if "d_loss" in m:
                    post["d"] = f"{m['d_loss']:.3f}"
                bar.set_postfix(post, refresh=False)
                bar.update(1)
                if self.step % self.cfg.save_every == 0 or self.step == steps:
                    self.save()
        bar.close()
        save_vae_folder(self.vae, self.run_dir / VAE_DIR, metadata={"stage": self.cfg.stage, "step": str(self.step)})
        return history

    @torch.no_grad()
    def evaluate(self, video: Tensor) -> dict[str, float]:
        """Reconstruction L1 / PSNR of ``video [B, 3, T, H, W]`` with the posterior mean, no
        depth skipping (and for the quantized stage, the bit usage)."""
        was_training = self.vae.training
        self.vae.eval()
        try:
            video = _check_video(video).to(self.device)
            chunk_frames, chunk_latents = self._chunks(video.shape[2])
            z = self.vae.encode(video, sample=False, chunk_frames=chunk_frames)
            res: dict[str, float] = {}
            if self.quantized:
                qo = quantize_pyramid_ste(z, self.schedule_for(*z.shape[2:]), config=self.cfg.quantizer.bsq())
                z = qo.latent
                res["bit_usage"] = qo.bit_usage
            recon = self.vae.decode(z, chunk_latents=chunk_latents)
            res.update(l1=float(l1_loss(recon, video)), psnr=reconstruction_psnr(recon, video))
            return res
        finally:
            self.vae.train(was_training)
