"""Clips for tokenizer training: where they come from and how they become batches.

A data source is anything that yields clips ``[3, T, H, W]`` in [-1, 1] (T = 1 + 4k): a callable
``index -> clip`` (:class:`SmoothClips`, random smooth videos made here), a map-style dataset
(the procedural world) or an iterable (:class:`MediaClips`, raw videos through
``MediaDataset``). :class:`ClipStream` turns any of them into batches ``[B, 3, T, H, W]`` as a
function of the step, so a resumed run sees exactly the batches it would have seen;
:func:`build_data_source` builds the source a recipe's :class:`DataConfig` names.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from infinitystar.train.tokenizer.config import DataConfig

__all__ = [
    "smooth_video",
    "SmoothClips",
    "ClipStream",
    "MediaClips",
    "build_data_source",
    "check_video",
]


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


def check_video(video: Tensor) -> Tensor:
    """``video`` unchanged if it is a float batch ``[B, 3, T, H, W]`` of finite values in [-1, 1];
    otherwise a ValueError that says how to fix the data (a bad clip fails here, not as a NaN loss)."""
    if video.ndim != 5 or video.shape[1] != 3 or not video.is_floating_point():
        raise ValueError(f"training clips must be float [B, 3, T, H, W] in [-1, 1], got {video.dtype} {video.shape}")
    if not torch.isfinite(video).all():
        raise ValueError("a training clip contains NaN or infinite values")
    lo, hi = float(video.min()), float(video.max())
    if lo < -1.001 or hi > 1.001:
        raise ValueError(f"training clips must lie in [-1, 1] (map uint8 with x / 127.5 - 1), got [{lo:.3f}, {hi:.3f}]")
    return video


class MediaClips:
    """Endless batches ``[B, 3, T, H, W]`` from a :class:`~infinitystar.train.data.media_dataset.MediaDataset`
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

    "world": ``infinitystar.world.dataset.WorldDataset`` items at ``frames`` x ``height`` x ``width``
    (``num_clips`` items, default 100000, reshuffled every epoch). "media": a
    ``MediaDataset`` over ``manifest`` at ``resolution`` (default ``"{height}x{width}"``),
    every clip ``frames`` long, batches of one size bucket.
    """
    if cfg.source == "smooth":
        return SmoothClips(cfg.frames, cfg.height, cfg.width, cfg.seed, cfg.num_clips)
    if cfg.source == "world":
        from infinitystar.world.dataset import WorldDataset
        from infinitystar.world.scenes import WorldSpec

        spec = WorldSpec.with_ranges(cfg.frames, (cfg.height, cfg.width), cfg.size_range, cfg.travel_range, cfg.colors)
        return WorldDataset(cfg.num_clips if cfg.num_clips > 0 else 100_000, seed=cfg.seed, spec=spec)
    if cfg.source == "media":
        if not cfg.manifest:
            raise ValueError("data.source 'media' needs data.manifest (CLI: --data <manifest file>)")
        from infinitystar.train.data.media_dataset import MediaDataset

        resolution = cfg.resolution if cfg.resolution is not None else f"{cfg.height}x{cfg.width}"
        ds = MediaDataset(
            cfg.manifest, resolution=resolution, batch_size=cfg.batch_size, seed=cfg.seed, num_frames=cfg.frames
        )
        return MediaClips(ds)
    raise ValueError(f"unknown data source {cfg.source!r}; accepted: 'smooth', 'world', 'media'")
