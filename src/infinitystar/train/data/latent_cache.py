"""The latent cache format: VAE features of every training clip, computed once (``infinitystar extract``).

Training reads these instead of running the VAE every step, as the original's ``--use_vae_token_cache`` did. This
module is the format that the writer (:mod:`infinitystar.train.data.extract`) and the reader
(:class:`~infinitystar.train.data.dataset.LatentDataset`) share: settings, names, index entries, and reading and writing
one item's file.

Layout of a cache folder::

    cache_config.json                   settings every file was made with (checked on resume)
    latents/ab/<key>.safetensors        one file per item: "latent" [64, t, h, w] float32 (+ "text.<i>" [L, C])
    index-rank00000.jsonl               one line per cached item (what the dataset reads), one file per rank
    failures-rank00000.json             the items the last run could not use, with the reason

- **What is stored**: the VAE's raw features, posterior-*sampled* like the original (``posterior="mean"`` to use the
  mean), in float32, for the longest ``1 + 4k`` frames of the clip up to ``max_frames``; training slices the first
  ``4 d + 1`` latent frames. The posterior noise comes from a generator seeded by ``(seed, key)``, so a file is
  reproducible on a given device and dtype whichever rank or run makes it. Metadata (source, frame range and the
  frames used, template, duration, captions) is in the file's header and in the index line.
- **Names**: ``<slug>-<hash>``, the hash covering the absolute source path, the frame range and the resolution
  (which fixes the pixel size for a given source), so two videos of the same name never collide (the original's
  ``md5(basename)`` did) and a resumed run knows what exists without opening any media.
- **Robustness**: every file is written atomically and every index line appended with one write, so a crash
  leaves at most a torn last line (:func:`repair_index`); resuming and skipping bad media is the extraction's job.
- **Text features** (optional): with a :class:`~infinitystar.text.encoders.TextEncoder`, the features of every caption
  the sample can get when sentence dropping is off (:func:`~infinitystar.train.data.captions.candidate_captions`) are
  stored too, so training can skip the text encoder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from infinitystar.files import atomic_write, write_json, write_text
from infinitystar.train.data.manifest import MediaItem
from infinitystar.train.data.preprocess import Clip, Resolution, mapped_duration

log = logging.getLogger(__name__)

CACHE_FORMAT = "infinitystar.latent_cache/1"
CONFIG_NAME = "cache_config.json"
LATENT_KEY = "latent"


class CacheError(ValueError):
    """A cache folder is missing, inconsistent, or was made with other settings."""


# ----------------------------------------------------------------------------------------------------------------------
# Settings and names


@dataclass(frozen=True)
class CacheConfig:
    """The settings a cache was made with; a resumed extraction must use the same ones."""

    resolution: str
    max_frames: int
    min_frames: int
    posterior: str  #: "sample" (the original) or "mean"
    seed: int
    dtype: str  #: the VAE's compute dtype
    vae_fingerprint: str
    text_encoder: str | None = None
    format: str = CACHE_FORMAT

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> CacheConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise CacheError(f"{CONFIG_NAME}: unknown fields {unknown}; was it written by a newer version?")
        return cls(**d)


def read_cache_config(cache_dir: str | os.PathLike) -> CacheConfig:
    path = Path(cache_dir) / CONFIG_NAME
    if not path.is_file():
        raise CacheError(f"{cache_dir} is not a latent cache (no {CONFIG_NAME}); make one with `infinitystar extract`")
    try:
        return CacheConfig.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError) as exc:
        raise CacheError(f"{path} is corrupt: {exc}") from None


def ensure_config(cache_dir: Path, config: CacheConfig) -> None:
    """Write the config, or check that an existing cache was made with the same settings (files made with other
    settings must not mix in one cache; only the text encoder may change, as text features are optional)."""
    path = cache_dir / CONFIG_NAME
    if path.is_file():
        old = read_cache_config(cache_dir)
        diff = {
            k: (v, getattr(config, k))
            for k, v in old.to_json().items()
            if v != getattr(config, k) and k != "text_encoder"
        }
        if diff:
            lines = ", ".join(f"{k}: cache has {a!r}, this run {b!r}" for k, (a, b) in sorted(diff.items()))
            raise CacheError(
                f"the cache in {cache_dir} was made with other settings ({lines}); use the same settings to resume, "
                "or another --out folder"
            )
        return
    write_json(path, config.to_json())


_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def cache_key(item: MediaItem, resolution: str | Resolution) -> str:
    """Collision-free name of an item's cache file: a readable slug of the file name plus a hash of the absolute
    path, the frame range and the resolution."""
    spec = Resolution.parse(resolution).spec
    end = "end" if item.end_frame is None else str(item.end_frame)
    ident = f"{Path(item.path).resolve()}|{item.begin_frame}|{end}|{spec}"
    digest = hashlib.sha256(ident.encode("utf-8")).hexdigest()[:24]
    slug = _SLUG.sub("_", Path(item.path).stem)[:40].strip("_.") or "item"
    return f"{slug}-{digest}"


def cache_file(cache_dir: str | os.PathLike, key: str) -> Path:
    """Where an item's file lives: ``latents/<2 hash chars>/<key>.safetensors`` (bounded folder sizes)."""
    return Path(cache_dir) / "latents" / key[-24:-22] / f"{key}.safetensors"


def vae_fingerprint(vae: torch.nn.Module) -> str:
    """A cheap, device-independent id of a VAE's weights: names, shapes and up to 256 evenly spaced values of every
    tensor (exact values, no float reductions, so CPU and GPU agree)."""
    h = hashlib.sha256()
    for name, tensor in sorted(vae.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        h.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        if flat.numel():
            idx = torch.linspace(0, flat.numel() - 1, min(256, flat.numel()), device=flat.device).long()
            h.update(flat[idx].float().cpu().numpy().tobytes())
    return h.hexdigest()[:32]


# ----------------------------------------------------------------------------------------------------------------------
# Index entries


@dataclass(frozen=True)
class CacheEntry:
    """One cached item, as listed in the index and in its file's header."""

    key: str
    file: str  #: relative to the cache folder
    kind: str  #: "video" or "image"
    source: str
    begin_frame: int
    end_frame: int | None
    source_fps: float | None
    seconds: float  #: real duration of the source clip (0 for an image)
    num_frames: int  #: 16 fps frames encoded (1 for an image)
    h_div_w: float  #: aspect template
    pixel_size: tuple[int, int]
    latent_shape: tuple[int, int, int, int]  #: [64, t, h, w]
    caption: str
    alt_caption: str | None = None
    quality_prompt: str | None = None
    text_captions: tuple[str, ...] = ()  #: captions whose text features are stored ("text.<i>")

    def max_duration(self) -> int:
        """Whole seconds the cached frames cover (0 for an image or a clip under 1 s)."""
        if self.kind != "video":
            return 0
        return mapped_duration(self.seconds, (self.num_frames - 1) // 16)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["pixel_size"] = list(self.pixel_size)
        d["latent_shape"] = list(self.latent_shape)
        d["text_captions"] = list(self.text_captions)
        return d

    @classmethod
    def from_json(cls, d: dict) -> CacheEntry:
        d = dict(d)
        d["pixel_size"] = tuple(d["pixel_size"])
        d["latent_shape"] = tuple(d["latent_shape"])
        d["text_captions"] = tuple(d.get("text_captions", ()))
        return cls(**d)


def index_path(cache_dir: Path, rank: int) -> Path:
    """Each rank appends to its own index, so ranks never write the same file."""
    return cache_dir / f"index-rank{rank:05d}.jsonl"


def append_index_line(path: Path, obj: dict) -> None:
    """Append one JSON line with a single write and fsync: a crash loses at most this line (repaired on resume)."""
    data = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def repair_index(path: Path) -> None:
    """Rewrite an index without its unreadable lines (a crash mid-append leaves a torn last line, and the next
    append would glue onto it); the items they listed are re-listed from their files' headers."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    good = []
    for line in lines:
        try:
            CacheEntry.from_json(json.loads(line))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
        good.append(line)
    if len(good) != len(lines) or not path.read_bytes().endswith(b"\n"):
        write_text(path, "".join(line + "\n" for line in good))


def read_index(cache_dir: str | os.PathLike, *, check_files: bool = True) -> list[CacheEntry]:
    """All entries of a cache (every rank's index), one per key, sorted by key.

    A torn last line (a crash while appending) is skipped with a warning; ``check_files`` drops entries whose file
    is gone (with a warning).
    """
    cache_dir = Path(cache_dir)
    read_cache_config(cache_dir)  # a clear error when this is not a cache
    entries: dict[str, CacheEntry] = {}
    for path in sorted(cache_dir.glob("index-*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    entry = CacheEntry.from_json(json.loads(line))
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    log.warning("%s:%d: unreadable index line skipped (%s)", path, lineno, exc)
                    continue
                entries[entry.key] = entry
    if check_files:
        missing = [k for k, e in entries.items() if not (cache_dir / e.file).is_file()]
        for k in missing:
            log.warning("cache file of %s is missing; entry skipped", k)
            del entries[k]
    return [entries[k] for k in sorted(entries)]


def read_entry(path: str | os.PathLike) -> CacheEntry:
    """The entry stored in a cache file's header."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise CacheError(f"cannot read cache file {path}: {type(exc).__name__}: {exc}") from None
    if meta.get("format") != CACHE_FORMAT or "entry" not in meta:
        raise CacheError(f"{path} is not a latent cache file (format {meta.get('format')!r})")
    return CacheEntry.from_json(json.loads(meta["entry"]))


def load_latent(cache_dir: str | os.PathLike, entry: CacheEntry, num_latent_frames: int | None = None) -> Tensor:
    """The cached latent ``[64, t, h, w]`` float32, optionally only its first ``num_latent_frames`` frames (only
    those are read from disk)."""
    from safetensors import safe_open

    path = Path(cache_dir) / entry.file
    try:
        with safe_open(str(path), framework="pt") as f:
            sl = f.get_slice(LATENT_KEY)
            t = sl.get_shape()[1]
            if num_latent_frames is not None and not 1 <= num_latent_frames <= t:
                raise CacheError(f"{path}: {num_latent_frames} latent frames asked, the file holds {t}")
            latent = sl[:, : num_latent_frames or t]
    except CacheError:
        raise
    except Exception as exc:
        raise CacheError(f"cannot read cache file {path}: {type(exc).__name__}: {exc}") from None
    return latent.float().contiguous()


def load_text_features(cache_dir: str | os.PathLike, entry: CacheEntry, caption: str) -> Tensor | None:
    """Stored text features ``[L, C]`` of exactly ``caption``, or None when that caption has none."""
    if caption not in entry.text_captions:
        return None
    from safetensors import safe_open

    i = entry.text_captions.index(caption)
    with safe_open(str(Path(cache_dir) / entry.file), framework="pt") as f:
        return f.get_tensor(f"text.{i}").float()


# ----------------------------------------------------------------------------------------------------------------------
# Writing


def make_entry(
    key: str, cache_dir: Path, item: MediaItem, clip: Clip, latent: Tensor, texts: Sequence[str]
) -> CacheEntry:
    """The entry of a freshly encoded item: what the dataset needs to bucket and caption it without opening media."""
    return CacheEntry(
        key=key,
        file=str(cache_file(cache_dir, key).relative_to(cache_dir)),
        kind=item.kind,
        source=str(item.path),
        begin_frame=item.begin_frame,
        end_frame=item.end_frame,
        source_fps=clip.source_fps,
        seconds=float(clip.seconds),
        num_frames=clip.num_frames,
        h_div_w=float(clip.h_div_w),
        pixel_size=(int(clip.video.shape[2]), int(clip.video.shape[3])),
        latent_shape=tuple(int(s) for s in latent.shape),
        caption=item.caption,
        alt_caption=item.alt_caption,
        quality_prompt=item.quality_prompt,
        text_captions=tuple(texts),
    )


def write_cache_file(
    path: Path, entry: CacheEntry, latent: Tensor, text: Sequence[Tensor], frames: Sequence[int]
) -> None:
    """Atomically write one item: ``latent`` and ``text.<i>`` tensors, the entry and frame indices as metadata."""
    from safetensors.torch import save_file

    tensors = {LATENT_KEY: latent.detach().to("cpu", torch.float32).contiguous()}
    for i, t in enumerate(text):
        tensors[f"text.{i}"] = t.detach().to("cpu", torch.float32).contiguous()
    meta = {
        "format": CACHE_FORMAT,
        "entry": json.dumps(entry.to_json(), ensure_ascii=False),
        "frame_indices": json.dumps(list(frames)),
    }
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
