"""The extraction pass: encode the media of training manifests into a latent cache (``infinitystar extract``).

The cache format (names, index, files) is :mod:`infinitystar.train.data.latent_cache`; this module fills it.

- **Sharding**: rank ``r`` of ``world_size`` encodes ``items[r::world_size]`` and appends to its own index, so
  ranks never wait for or write over each other.
- **Resumable**: items whose file exists are skipped (and re-listed in the index if a crash lost their line).
- **Robust**: a bad manifest line or a missing, empty, corrupt or too short video (or one the VAE runs out of
  memory on) is logged with the reason, counted and written to ``failures-rank<r>.json``; it never stops the run.
  Disk errors while writing the cache do stop it.
- **Overlap**: worker threads decode and resize upcoming items while the VAE encodes the current one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from infinitystar.files import write_json
from infinitystar.train.data.buckets import shard_items
from infinitystar.train.data.captions import candidate_captions, item_generator
from infinitystar.train.data.latent_cache import (
    CacheConfig,
    CacheError,
    append_index_line,
    cache_file,
    cache_key,
    ensure_config,
    index_path,
    make_entry,
    read_entry,
    read_index,
    repair_index,
    vae_fingerprint,
    write_cache_file,
)
from infinitystar.train.data.manifest import Manifest, ManifestProblem, MediaItem, read_manifest
from infinitystar.train.data.preprocess import (
    Clip,
    MediaError,
    Resolution,
    check_frame_count,
    load_item,
    mapped_duration,
)

log = logging.getLogger(__name__)

_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@dataclass
class ExtractSummary:
    """What one extraction run (one rank) did."""

    cached: int = 0
    skipped_existing: int = 0
    failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  #: (item, reason)
    seconds: float = 0.0
    frames_encoded: int = 0

    def __str__(self) -> str:
        return (
            f"cached {self.cached}, already cached {self.skipped_existing}, failed {self.failed} "
            f"({self.frames_encoded} frames encoded in {self.seconds:.1f} s)"
        )

    def report(self) -> dict:
        """The content of ``failures-rank<r>.json``: the counts, and every failed item with its reason."""
        return {
            "summary": {k: v for k, v in dataclasses.asdict(self).items() if k != "failures"},
            "failures": [{"item": w, "reason": r} for w, r in self.failures],
        }


def failures_file(cache_dir: str | os.PathLike, rank: int) -> Path:
    """Where a rank's failure report goes (one per rank, rewritten by every run)."""
    return Path(cache_dir) / f"failures-rank{rank:05d}.json"


@torch.inference_mode()
def encode_clip(
    vae, clip: Clip, *, key: str, seed: int, posterior: str = "sample", chunk_frames: int | None = None
) -> Tensor:
    """VAE raw features ``[64, t, h, w]`` float32 of one clip; the posterior noise comes from a generator seeded by
    ``(seed, key)`` on the VAE's device, so a file does not depend on which rank or run made it."""
    device = vae.latent_scales.device
    video = clip.video[None].to(device=device, dtype=vae.latent_scales.dtype)  # [3,T,H,W] -> [1,3,T,H,W]
    g = item_generator(seed, 0, key, "posterior", device)
    latent = vae.encode(video, sample=posterior == "sample", generator=g, chunk_frames=chunk_frames)
    latent = latent[0].float().cpu()  # [1,64,t,h,w] -> [64,t,h,w]
    if not torch.isfinite(latent).all():
        raise MediaError(f"the VAE produced non-finite latents (dtype {vae.latent_scales.dtype}); try float32")
    return latent


def extract_latents(
    manifest: Manifest | Sequence[MediaItem] | str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    vae,
    *,
    resolution: str | Resolution,
    max_frames: int = 81,
    min_frames: int = 17,
    seed: int = 0,
    posterior: str = "sample",
    rank: int = 0,
    world_size: int = 1,
    text_encoder=None,
    workers: int = 2,
    max_new: int | None = None,
    progress: bool = True,
) -> ExtractSummary:
    """Encode every item of a manifest (this rank's share, ``items[rank::world_size]``) into ``out_dir``.

    Resumable: items whose file exists are skipped (and re-listed in the index if a crash lost their line).
    Problems with single items (bad manifest lines, missing/empty/corrupt/too short media) are logged, counted and
    written to ``failures-rank<r>.json``; they never stop the run. ``workers`` threads decode and resize upcoming
    items while the VAE runs. ``max_new`` stops after caching that many new items (for a bounded run).
    """
    from tqdm.auto import tqdm

    _check_settings(posterior=posterior, max_frames=max_frames, min_frames=min_frames, workers=workers)
    resolution = Resolution.parse(resolution)
    started = time.perf_counter()
    summary = ExtractSummary()
    items, problems = _rank_share(manifest, rank, world_size)
    summary.failures += [(p.where, p.reason) for p in problems]
    summary.failed += len(problems)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = _cache_config(vae, resolution, max_frames, min_frames, posterior, seed, text_encoder)
    ensure_config(out, config)
    index = index_path(out, rank)
    todo = _items_to_encode(items, out, index, resolution, summary)

    prepare = partial(load_item, resolution=resolution, max_frames=max_frames, min_frames=min_frames)
    upcoming = _prefetched(todo, prepare, workers, stop=lambda: max_new is not None and summary.cached >= max_new)
    bar = tqdm(total=len(todo), desc=f"extract (rank {rank})", disable=not progress, unit="item")
    with contextlib.closing(upcoming), bar:  # on exit: the bar closes, then pending decodes are cancelled
        for key, item, load in upcoming:
            encoded = _encode_or_report(vae, key, item, load, summary, seed=seed, posterior=posterior)
            if encoded is not None:
                clip, latent = encoded
                _write_item(out, index, key, item, clip, latent, text_encoder)
                summary.cached += 1
                summary.frames_encoded += clip.num_frames
            bar.update(1)
    summary.seconds = time.perf_counter() - started
    write_json(failures_file(out, rank), summary.report())
    return summary


# ----------------------------------------------------------------------------------------------------------------------
# The steps of extract_latents


def _check_settings(*, posterior: str, max_frames: int, min_frames: int, workers: int) -> None:
    """Fail before any file is touched on settings that would make a useless or inconsistent cache."""
    if posterior not in ("sample", "mean"):
        raise ValueError(f"posterior must be 'sample' (the original) or 'mean', got {posterior!r}")
    check_frame_count(max_frames, "max_frames")
    if isinstance(min_frames, bool) or not isinstance(min_frames, int) or not 1 <= min_frames <= max_frames:
        raise ValueError(f"min_frames must be an integer in 1..max_frames ({max_frames}), got {min_frames!r}")
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be a non-negative integer, got {workers!r}")


def _rank_share(manifest, rank: int, world_size: int) -> tuple[list[MediaItem], list[ManifestProblem]]:
    """This rank's items and bad manifest lines: each item is encoded, and each bad line reported, by one rank."""
    if isinstance(manifest, Manifest):
        parsed = manifest
    elif isinstance(manifest, Sequence) and manifest and all(isinstance(m, MediaItem) for m in manifest):
        parsed = Manifest(list(manifest))
    else:
        parsed = read_manifest(manifest, on_error="skip")
    return shard_items(parsed.items, rank, world_size), shard_items(parsed.problems, rank, world_size)


def _cache_config(vae, resolution: Resolution, max_frames, min_frames, posterior, seed, text_encoder) -> CacheConfig:
    """The settings that decide what the files hold; a resumed run must match them (see ``ensure_config``)."""
    return CacheConfig(
        resolution=resolution.spec,
        max_frames=max_frames,
        min_frames=min_frames,
        posterior=posterior,
        seed=int(seed),
        dtype=str(vae.latent_scales.dtype).removeprefix("torch."),
        vae_fingerprint=vae_fingerprint(vae),
        text_encoder=type(text_encoder).__name__ if text_encoder is not None else None,
    )


def _items_to_encode(
    items: Sequence[MediaItem], out: Path, index: Path, resolution: Resolution, summary: ExtractSummary
) -> list[tuple[str, MediaItem]]:
    """``(key, item)`` of the items still to encode, in manifest order; the others (cached already, or listed twice)
    are counted as skipped. Repairs this rank's index first, so a crashed run resumes cleanly."""
    repair_index(index)
    indexed = {e.key for e in read_index(out, check_files=False)}
    todo: list[tuple[str, MediaItem]] = []
    queued: set[str] = set()
    for item in items:
        key = cache_key(item, resolution)
        if key in queued:  # the same clip listed twice: one file
            summary.skipped_existing += 1
            log.info("%s lists %s again; it is cached once", item.where, item.path)
            continue
        queued.add(key)
        if _is_cached(out, index, key, indexed):
            summary.skipped_existing += 1
        else:
            todo.append((key, item))
    return todo


def _is_cached(out: Path, index: Path, key: str, indexed: set[str]) -> bool:
    """Whether ``key`` has a readable file. A file written just before a crash (no index line yet) is listed now;
    an unreadable one counts as not cached, so it is made again."""
    path = cache_file(out, key)
    if not path.is_file():
        return False
    if key not in indexed:
        try:
            append_index_line(index, read_entry(path).to_json())
        except CacheError as exc:
            log.warning("unreadable cache file %s is re-made (%s)", path, exc)
            return False
        indexed.add(key)
    return True


def _prefetched(
    todo: Sequence[tuple[str, MediaItem]], prepare: Callable[[MediaItem], Clip], workers: int, stop: Callable[[], bool]
) -> Iterator[tuple[str, MediaItem, Callable[[], Clip]]]:
    """``(key, item, load)`` for each item of ``todo`` until ``stop()``; ``load()`` returns the item's clip (and
    raises its media errors). Up to ``2 * workers`` upcoming items are decoded in threads meanwhile, so the VAE does
    not wait for decoding; with ``workers=0`` ``load`` decodes in the caller's thread. Close the iterator to cancel
    what is still pending."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="extract") if workers > 0 else None
    pending: deque[tuple[str, MediaItem, Future | None]] = deque()
    queue = iter(todo)
    window = max(1, 2 * workers)

    def refill() -> None:
        while len(pending) < window:
            nxt = next(queue, None)
            if nxt is None:
                return
            key, item = nxt
            pending.append((key, item, pool.submit(prepare, item) if pool else None))

    try:
        refill()
        while pending and not stop():
            key, item, future = pending.popleft()
            refill()
            yield key, item, (future.result if future is not None else partial(prepare, item))
    finally:
        if pool is not None:
            for _, _, future in pending:
                future.cancel()
            pool.shutdown(wait=True)


def _encode_or_report(
    vae, key: str, item: MediaItem, load: Callable[[], Clip], summary: ExtractSummary, *, seed: int, posterior: str
) -> tuple[Clip, Tensor] | None:
    """The item's clip and latent, or None once its failure is recorded: problems of one item (its media, or the
    VAE on it, out of memory included) are reported and the run goes on."""
    where = item.where or str(item.path)
    try:
        clip = load()
        return clip, encode_clip(vae, clip, key=key, seed=seed, posterior=posterior)
    except (MediaError, ValueError, OSError, _OOM) as exc:
        if isinstance(exc, _OOM) and torch.cuda.is_available():
            torch.cuda.empty_cache()  # give back what the failed attempt held, so the next (smaller) item can fit
        summary.failed += 1
        summary.failures.append((where, str(exc)))
        log.warning("skipped %s: %s", where, exc)
        return None


def _write_item(out: Path, index: Path, key: str, item: MediaItem, clip: Clip, latent: Tensor, text_encoder) -> None:
    """Write the item's file, then its index line: a crash in between leaves a file that the next run re-lists."""
    texts: list[str] = []
    features: Sequence[Tensor] = []
    if text_encoder is not None:
        duration = mapped_duration(clip.seconds, (clip.num_frames - 1) // 16) if item.is_video else 0
        texts = candidate_captions(item.kind, item.caption, item.alt_caption, item.quality_prompt, duration)
        features = text_encoder.encode(texts)
    entry = make_entry(key, out, item, clip, latent, texts)
    write_cache_file(out / entry.file, entry, latent, features, clip.frame_indices)
    append_index_line(index, entry.to_json())
