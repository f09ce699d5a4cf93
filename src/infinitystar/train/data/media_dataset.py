"""Training data read from raw media: a manifest's videos and images, preprocessed as the original did, for tokenizer
training (``list[MediaSample]``) or, given a VAE, encoded online into ``list[TrainSample]`` (small experiments
without a latent cache). Same protocol as :class:`~infinitystar.train.data.dataset.LatentDataset`: deterministic batches
of one bucket, sharded over ranks, exactly resumable."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from infinitystar.media.probe import probe_media
from infinitystar.sizes import FPS
from infinitystar.train.data.captions import CaptionOptions, caption_options, item_generator, training_caption
from infinitystar.train.data.dataset import DEFAULT_MAX_DURATION, TrainSample, _BucketedDataset
from infinitystar.train.data.latent_cache import cache_key
from infinitystar.train.data.manifest import Manifest, MediaItem, read_manifest
from infinitystar.train.data.preprocess import (
    MediaError,
    Resolution,
    check_frame_count,
    load_image,
    load_video,
    mapped_duration,
    plan_video,
)

log = logging.getLogger(__name__)


@dataclass
class MediaSample:
    """A preprocessed clip for tokenizer training (or any pixel-space use)."""

    key: str  # unique id of the item (its cache name)
    video: torch.Tensor  # [3, T, H, W] float32 in [-1, 1]; T = 1 for an image, 1 + 4k for a video
    caption: str  # final caption, as TrainSample.caption
    h_div_w: float  # the aspect template (height / width)
    duration: int  # whole seconds the frames cover, 0 for an image


# ----------------------------------------------------------------------------------------------------------------------
# From raw media


@dataclass(frozen=True)
class _MediaPlan:
    item: MediaItem
    key: str
    h_div_w: float
    num_frames: int
    duration: int
    plan: object  # ClipPlan of a video, None for an image


class MediaDataset(_BucketedDataset):
    """Batches of preprocessed media read online from a manifest.

    Yields ``list[MediaSample]`` (videos ``[3, T, H, W]`` in [-1, 1]); with ``vae`` given, ``list[TrainSample]``
    whose latents are encoded on the fly (posterior noise from ``(seed, epoch, item)``).

    Args:
        manifest: a manifest source or a parsed :class:`Manifest`.
        resolution: '480p', '720p', a budget ('0.40M'), 'scales:K' or 'HxW' (see :class:`Resolution`).
        num_frames: every video clip gets exactly this many 16 fps frames (1 + 4k; shorter videos are left out);
            by default ``16 d + 1`` with ``d = min(int(seconds), max_duration)``, as the transformer training.
        include_images: images are yielded as ``T = 1`` clips (in their own buckets).
        prefetch: batches decoded ahead in a background thread (0: decode in the caller's thread).

    Every item is probed once up front (container header; images: their size) to place it in a bucket; items that
    fail the probe are logged and left out (``self.problems``). An item that fails to decode later is logged and
    replaced by another item of its batch, so batches keep their size.
    """

    def __init__(
        self,
        manifest: Manifest | str | os.PathLike | Sequence[str | os.PathLike],
        *,
        resolution: str | Resolution,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        max_duration: int | None = DEFAULT_MAX_DURATION,
        num_frames: int | None = None,
        include_images: bool = True,
        captions: CaptionOptions | dict | None = None,
        drop_last: bool = True,
        shuffle: bool = True,
        vae=None,
        posterior: str = "sample",
        prefetch: int = 1,
    ) -> None:
        self.resolution = Resolution.parse(resolution)
        if num_frames is not None:
            check_frame_count(num_frames)
        if posterior not in ("sample", "mean"):
            raise ValueError(f"posterior must be 'sample' or 'mean', got {posterior!r}")
        self.num_frames = num_frames
        self.max_duration = max_duration
        self.captions = caption_options(captions)
        self.vae = vae
        self.posterior = posterior
        parsed = manifest if isinstance(manifest, Manifest) else read_manifest(manifest, on_error="skip")
        self.problems: list[tuple[str, str]] = [(p.where, p.reason) for p in parsed.problems]
        plans = self._plan_items(parsed.items, include_images)
        if not plans:
            raise ValueError(f"manifest {manifest} gives no usable item; problems: {self.problems[:5]}")
        self.plans = plans
        keys = [(p.h_div_w, p.num_frames, *self.resolution.pixel_size(p.h_div_w)) for p in plans]
        super().__init__(
            keys,
            batch_size=batch_size,
            seed=seed,
            rank=rank,
            world_size=world_size,
            drop_last=drop_last,
            shuffle=shuffle,
            prefetch=prefetch,
        )

    def _plan_items(self, items: Sequence[MediaItem], include_images: bool) -> list[_MediaPlan]:
        """Probe every item once to bucket it; an item that fails is left out and added to ``self.problems``."""
        plans: list[_MediaPlan] = []
        for item in items:
            if not item.is_video and not include_images:
                continue
            try:
                plans.append(self._plan_item(item, cache_key(item, self.resolution)))
            except MediaError as exc:
                self.problems.append((item.where or str(item.path), str(exc)))
                log.warning("left out %s: %s", item.where or item.path, exc)
        return plans

    def _plan_item(self, item: MediaItem, key: str) -> _MediaPlan:
        if not item.is_video:
            info = probe_media(item.path, "image")  # the header only
            return _MediaPlan(item, key, self.resolution.template(info.height / info.width), 1, 0, None)
        plan = plan_video(item)
        if self.num_frames is not None:
            frames = self.num_frames
            if (frames - 1) / FPS > plan.seconds + 1e-6:
                raise MediaError(f"video {item.path} lasts {plan.seconds:.2f} s, shorter than {frames} frames")
            duration = (frames - 1) // FPS
        else:
            duration = mapped_duration(plan.seconds, self.max_duration)
            if duration < 1:
                raise MediaError(f"video {item.path} is too short: {plan.seconds:.2f} s, at least 1 s needed")
            frames = FPS * duration + 1
        probe = plan.probe
        return _MediaPlan(item, key, self.resolution.template(probe.height / probe.width), frames, duration, plan)

    def _load(self, p: _MediaPlan, epoch: int):
        if p.plan is None:
            clip = load_image(p.item, self.resolution)
        else:
            clip = load_video(p.item, self.resolution, num_frames=p.num_frames, min_frames=1, plan=p.plan)
        g = item_generator(self.seed, epoch, p.key, "caption")
        caption = training_caption(
            p.item.kind, p.item.caption, p.item.alt_caption, p.item.quality_prompt, p.duration, self.captions, g
        )
        if self.vae is None:
            return MediaSample(p.key, clip.video, caption, clip.h_div_w, p.duration)
        device = self.vae.latent_scales.device
        gen = item_generator(self.seed, epoch, p.key, "posterior", device=device)
        with torch.inference_mode():
            video = clip.video[None].to(device=device, dtype=self.vae.latent_scales.dtype)  # [1,3,T,H,W]
            latent = self.vae.encode(video, sample=self.posterior == "sample", generator=gen)
        return TrainSample(p.key, latent[0].float().cpu(), caption, None, clip.h_div_w, p.duration)  # [64,t,h,w]

    def _load_batch(self, indices: list[int], epoch: int) -> list:
        out: list = [None] * len(indices)
        errors = []
        for j, i in enumerate(indices):
            try:
                out[j] = self._load(self.plans[i], epoch)
            except MediaError as exc:
                errors.append(f"{self.plans[i].item.where or self.plans[i].item.path}: {exc}")
                log.warning("replacing %s in its batch: %s", self.plans[i].item.path, exc)
        good = [s for s in out if s is not None]
        if not good:
            raise MediaError("every item of a batch failed to load: " + "; ".join(errors))
        return [s if s is not None else good[j % len(good)] for j, s in enumerate(out)]

    def _fingerprint(self) -> int:
        return len(self.plans)

    @property
    def items(self) -> list[MediaItem]:
        return [p.item for p in self.plans]
