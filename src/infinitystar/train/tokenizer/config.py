"""The tokenizer training recipe: what to train (stage, freezing), on what data, with which losses.

Frozen dataclasses, one per section of the JSON recipe (the packaged ``tokenizer_tiny_cpu`` recipe):
:class:`DataConfig`, :class:`LossConfig`, :class:`QuantizerConfig`, :class:`OptimConfig` and the
whole :class:`TokenizerTrainConfig`, which checks every value at construction so that a bad
recipe fails before any weight is built, and loads from JSON through the package's one
dict -> dataclass builder (:mod:`infinitystar.config_dicts`). The trainer is
:mod:`infinitystar.train.tokenizer.trainer`; the stages it implements are described there.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from infinitystar import config_dicts
from infinitystar.models.config import PRESETS, VAEConfig
from infinitystar.schedule import Schedule
from infinitystar.train.optim import LR_SCHEDULES
from infinitystar.train.recipe import read_recipe
from infinitystar.train.tokenizer.discriminator import DiscriminatorConfig
from infinitystar.train.tokenizer.pyramid import BSQLossConfig, tokenizer_schedule

__all__ = [
    "STAGES",
    "FREEZABLE",
    "DataConfig",
    "LossConfig",
    "QuantizerConfig",
    "OptimConfig",
    "TokenizerTrainConfig",
]

#: "continuous": the VAE alone (stage 1); "quantized": with the multi-scale BSQ in the loop (stage 2)
STAGES = ("continuous", "quantized")
#: parts of the VAE a recipe can keep fixed (see ``TokenizerTrainConfig``)
FREEZABLE = ("encoder", "decoder", "tokens", "decoding")


@dataclass(frozen=True)
class DataConfig:
    """Where clips come from and their size.

    ``source``: "smooth" (random smooth videos made here: colored blobs drifting over a smooth
    background), "world" (the procedural world, :mod:`infinitystar.world.dataset`) or "media" (raw
    videos listed in ``manifest``, read through ``infinitystar.train.data.media_dataset.MediaDataset``).
    ``num_clips``: smooth: 0 = a new clip at every index, n = cycle over n clips (1 = overfit a
    single clip); world: the number of distinct items (0 = 100000). ``resolution`` (media only):
    a ``MediaDataset`` resolution such as "480p" or "scales:4" (multi-aspect buckets); default
    the fixed ``"{height}x{width}"``. ``size_range`` / ``travel_range`` (world only): the object's
    side and travel as frame fractions (``None``: the world's defaults, see ``WorldSpec``), so a
    recipe can pin the world it was trained on when the defaults move; ``colors`` (world only): the
    object colours drawn (``None``: the default world's eight; e.g. ``["pink"]``, a new colour).
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
    colors: tuple[str, ...] | None = None


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

    def schedule(self, t: int, h: int, w: int) -> Schedule:
        """The pyramid these settings give a latent of ``(t, h, w)`` (see ``tokenizer_schedule``)."""
        return tokenizer_schedule(
            t,
            h,
            w,
            repetitions=self.repetitions,
            detail_scale_min_tokens=self.detail_scale_min_tokens,
            frames_per_clip=self.frames_per_clip,
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
    "decoder", "decoding": everything that turns tokens into frames, the decoder, the projection
    after the quantizer and the latent scale, so that an encoder learns new tokens an existing
    decoder renders, or "tokens": everything the tokens depend on, the encoder, the projection
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
        if self.optim.decay not in LR_SCHEDULES:
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
        return cls.from_dict(read_recipe(path))

    def replace(self, **changes) -> TokenizerTrainConfig:
        return dataclasses.replace(self, **changes)
