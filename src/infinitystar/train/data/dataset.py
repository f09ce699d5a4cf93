"""Datasets for the trainers: batches of one bucket (one schedule), deterministic, sharded, exactly resumable.

- :class:`LatentDataset` reads a latent cache (``infinitystar extract``) and yields ``list[TrainSample]``: the
  transformer trainer's input.
- :class:`~infinitystar.train.data.media_dataset.MediaDataset` reads raw media from a manifest and yields
  ``list[MediaSample]`` (preprocessed videos, for tokenizer training), or, given a VAE, ``list[TrainSample]``
  encoded online (small experiments without a cache).

Both follow the same protocol::

    ds = LatentDataset(cache, batch_size=4, seed=0, rank=rank, world_size=world)
    ds.load_state_dict(saved)            # optional: resume
    for epoch in range(ds.epoch, epochs):
        ds.set_epoch(epoch)              # keeps a loaded mid-epoch position when it is the same epoch
        for batch in ds:                 # len(ds) batches per epoch on every rank
            ...
            saved = ds.state_dict()      # (epoch, index of the next batch)

Everything random (batch order, caption choice, sentence dropping, posterior noise of online encoding) comes from
generators seeded by ``(seed, epoch[, item])``, so a resumed run yields exactly the batches an uninterrupted run
would have yielded next.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import deque
from collections.abc import Hashable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from infinitystar.train.data.buckets import check_shard, plan_batches
from infinitystar.train.data.captions import CaptionOptions, caption_options, item_generator, training_caption
from infinitystar.train.data.latent_cache import CacheEntry, load_latent, load_text_features, read_index
from infinitystar.train.data.preprocess import (
    latent_frames_for_seconds,
)

log = logging.getLogger(__name__)

#: The released models train on clips of up to 5 s (10 s for the 480p long-video variant).
DEFAULT_MAX_DURATION = 5


@dataclass
class TrainSample:
    key: str  # unique id of the item (its cache name)
    latent: torch.Tensor  # [64, t, h, w] float32 VAE raw features; t = 1 for an image, 4*seconds+1 for a video
    caption: str  # final caption: choice + sentence drop + quality prompt + <<<t=Ns>>> prefix
    text: torch.Tensor | None  # [L, C] cached text features of `caption` when available, else None
    h_div_w: float  # the aspect template (height / width)
    duration: int  # seconds, 0 for an image


class _BucketedDataset:
    """Epoch / position bookkeeping and the batch plan shared by both datasets."""

    def __init__(
        self, bucket_keys: Sequence[Hashable], *, batch_size, seed, rank, world_size, drop_last, shuffle, prefetch
    ) -> None:
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"prefetch must be a non-negative number of batches, got {prefetch!r}")
        check_shard(rank, world_size)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.shuffle = shuffle
        self._bucket_keys = list(bucket_keys)
        self.prefetch = prefetch
        self.epoch = 0
        self._start = 0  # where the next __iter__ begins (set by load_state_dict)
        self._position = 0  # batches of this epoch already handed out
        self._plan = self._make_plan()

    def _make_plan(self) -> list[list[int]]:
        return plan_batches(
            self._bucket_keys,
            batch_size=self.batch_size,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
            drop_last=self.drop_last,
            shuffle=self.shuffle,
        )

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch`` (new order, new captions). The same epoch again keeps a position loaded by
        :meth:`load_state_dict`, so ``load_state_dict(s); set_epoch(s["epoch"])`` resumes mid-epoch."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        if epoch != self.epoch:
            self.epoch = epoch
            self._start = self._position = 0
            self._plan = self._make_plan()

    def __len__(self) -> int:
        """Batches per epoch on this rank (the same on every rank)."""
        return len(self._plan)

    def batch_indices(self) -> list[list[int]]:
        """This epoch's batches on this rank, as item indices."""
        return [list(b) for b in self._plan]

    def __iter__(self) -> Iterator[list]:
        start, self._start = self._start, 0
        self._position = start
        plan, epoch = self._plan, self.epoch
        if self.prefetch < 1:
            for i in range(start, len(plan)):
                batch = self._load_batch(plan[i], epoch)
                self._position = i + 1  # set before yielding: a checkpoint taken now resumes at the next batch
                yield batch
            return
        # load the next `prefetch` batches in a background thread while the caller trains on this one
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataset") as pool:
            pending: deque[Future] = deque()
            next_i = start
            try:
                for i in range(start, len(plan)):
                    while next_i < len(plan) and len(pending) <= self.prefetch:  # this batch + `prefetch` ahead
                        pending.append(pool.submit(self._load_batch, plan[next_i], epoch))
                        next_i += 1
                    batch = pending.popleft().result()
                    self._position = i + 1
                    yield batch
            finally:
                for future in pending:
                    future.cancel()

    def _load_batch(self, indices: list[int], epoch: int) -> list:
        raise NotImplementedError

    def _fingerprint(self) -> int:
        return len(self._bucket_keys)

    def state_dict(self) -> dict:
        """``epoch`` and ``batch_index`` (the next batch), plus the settings a resume must share."""
        return {
            "epoch": self.epoch,
            "batch_index": self._position,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "num_items": self._fingerprint(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a :meth:`state_dict`: the next ``__iter__`` starts at its batch of its epoch."""
        missing = {"epoch", "batch_index"} - set(state)
        if missing:
            raise ValueError(f"dataset state lacks {sorted(missing)}; expected the output of state_dict()")
        changed = [
            f"{k}: saved {state[k]!r}, now {v!r}"
            for k, v in (
                ("seed", self.seed),
                ("batch_size", self.batch_size),
                ("world_size", self.world_size),
                ("num_items", self._fingerprint()),
            )
            if k in state and int(state[k]) != v
        ]
        if changed:
            warnings.warn(
                "resuming a dataset whose settings changed (" + "; ".join(changed) + "): the batches will not be "
                "the ones the interrupted run would have seen",
                stacklevel=2,
            )
        self.epoch = int(state["epoch"])
        self._plan = self._make_plan()
        self._start = self._position = min(int(state["batch_index"]), len(self._plan))


# ----------------------------------------------------------------------------------------------------------------------
# From the latent cache


class LatentDataset(_BucketedDataset):
    """Batches of cached latents (``list[TrainSample]``, one bucket = one schedule per batch).

    Args:
        cache_dir: a folder written by ``infinitystar extract`` /
            :func:`~infinitystar.train.data.extract.extract_latents`, or a list of them read as one dataset (e.g.
            new data and replayed data made by different tokenizers; keys become ``{i}/{key}``, so items of
            different caches never collide).
        batch_size: samples per batch; a bucket's incomplete last batch is dropped unless ``drop_last=False``.
        seed: fixes batch order and caption draws together with the epoch.
        rank, world_size: data-parallel shard; every rank gets ``len(self)`` batches, of disjoint items.
        max_duration: longest clip in whole seconds (5 for the released 5 s model, 10 for the 10 s one); longer
            clips are truncated (their first ``4 d + 1`` latent frames), as the original.
        captions: caption choice, sentence dropping, quality prompt and duration prefix options.
        kinds: ``("video", "image")`` by default; one of them to train on videos or images only.
        load_text: attach cached text features when the final caption has them (else ``text`` is None).
        prefetch: batches loaded ahead in a background thread (0: load in the caller's thread).

    Videos shorter than one second (no whole second to train on) are left out.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        max_duration: int | None = DEFAULT_MAX_DURATION,
        captions: CaptionOptions | dict | None = None,
        kinds: Sequence[str] = ("video", "image"),
        drop_last: bool = True,
        shuffle: bool = True,
        load_text: bool = True,
        prefetch: int = 1,
    ) -> None:
        _check_latent_options(kinds, max_duration)
        several = not isinstance(cache_dir, (str, os.PathLike))
        self.cache_dirs = [Path(d) for d in cache_dir] if several else [Path(cache_dir)]
        self.cache_dir = self.cache_dirs[0]
        self.captions = caption_options(captions)
        self.load_text = load_text
        self.max_duration = max_duration
        indexed = []  # (cache folder, entry)
        for i, folder in enumerate(self.cache_dirs):
            indexed += [(folder, replace(e, key=f"{i}/{e.key}") if several else e) for e in read_index(folder)]
        where = {id(e): folder for folder, e in indexed}
        entries, durations = _usable_entries([e for _, e in indexed], kinds, max_duration)
        if not entries:
            shown = ", ".join(map(str, self.cache_dirs))
            raise ValueError(f"latent cache {shown} holds no usable {' or '.join(kinds)} item")
        self.entry_dirs = [where[id(e)] for e in entries]
        self.entries = entries
        self.durations = durations
        # bucket = one schedule: aspect template, seconds, and the latent's [h, w] (entries are [64, t, h, w])
        keys = [(e.h_div_w, d, e.latent_shape[2], e.latent_shape[3]) for e, d in zip(entries, durations)]
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
        if len(self) == 0:
            warnings.warn(
                f"latent cache {self.cache_dir}: {len(entries)} items give no full batch of {batch_size} per rank "
                f"over {world_size} rank(s); lower batch_size or set drop_last=False",
                stacklevel=2,
            )

    def __getitem__(self, index: int) -> TrainSample:
        """Item ``index`` as it is drawn in the current epoch."""
        return self.sample(index, self.epoch)

    def sample(self, index: int, epoch: int) -> TrainSample:
        """Item ``index`` as it is drawn in ``epoch`` (caption choice and dropping depend on the epoch)."""
        entry, d = self.entries[index], self.durations[index]
        g = item_generator(self.seed, epoch, entry.key, "caption")
        caption = training_caption(
            entry.kind, entry.caption, entry.alt_caption, entry.quality_prompt, d, self.captions, g
        )
        folder = self.entry_dirs[index]
        latent = load_latent(folder, entry, latent_frames_for_seconds(d))  # [64, 4d+1, h, w]
        text = load_text_features(folder, entry, caption) if self.load_text else None
        return TrainSample(entry.key, latent, caption, text, entry.h_div_w, d)

    def _load_batch(self, indices: list[int], epoch: int) -> list[TrainSample]:
        return [self.sample(i, epoch) for i in indices]

    def _fingerprint(self) -> int:
        return len(self.entries)


def _check_latent_options(kinds: Sequence[str], max_duration: int | None) -> None:
    """Reject bad options before the (possibly large) index is read."""
    bad = set(kinds) - {"video", "image"}
    if bad or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of ('video', 'image'), got {tuple(kinds)!r}")
    if max_duration is not None and (not isinstance(max_duration, int) or max_duration < 1):
        raise ValueError(f"max_duration must be a whole number of seconds >= 1 (or None), got {max_duration!r}")


def _usable_entries(
    entries: Sequence[CacheEntry], kinds: Sequence[str], max_duration: int | None
) -> tuple[list[CacheEntry], list[int]]:
    """The entries of ``kinds`` to train on, and the whole seconds each is trained on (its cached duration capped
    at ``max_duration``; 0 for an image). Videos under 1 s are left out (logged): no whole second to train on."""
    usable: list[CacheEntry] = []
    durations: list[int] = []
    too_short = 0
    for entry in entries:
        if entry.kind not in kinds:
            continue
        d = entry.max_duration() if entry.kind == "video" else 0
        if max_duration is not None:
            d = min(d, max_duration)
        if entry.kind == "video" and d < 1:
            too_short += 1
            continue
        usable.append(entry)
        durations.append(d)
    if too_short:
        log.info("%d cached videos shorter than 1 s are not used", too_short)
    return usable, durations
