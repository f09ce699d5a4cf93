"""Training manifests: jsonl files that list videos and images with their captions.

Two line formats are accepted, one JSON object per line:

- The original's format (``data/README.md`` of InfinityStar):

  - videos: ``video_path``, ``tarsier2_caption`` (required), ``begin_frame_id`` / ``end_frame_id`` (source frames,
    end exclusive; default: the whole video), ``fps`` (the source frame rate; default: read from the file),
    optional ``MiniCPM_V_2_6_caption`` and ``quality_prompt``;
  - images: ``image_path``, ``text`` (short caption) and/or ``long_caption``.

  Other fields (``width``, ``height``, ``h_div_w``, ...) are ignored, as in the original.

- A simple format: ``{"path": ..., "caption": ...}``; the extension decides video or image.

Relative paths resolve against the folder of the manifest file. A manifest source is a jsonl file, a folder (every
``*.jsonl`` under it, recursively, in sorted order) or a list of those. Every problem names ``file:line``; the reader
raises on the first one, or (``on_error="skip"``, used by extraction) logs it, records it and goes on.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from infinitystar.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES

log = logging.getLogger(__name__)

#: Captions longer than this are rejected: T5 reads at most 512 tokens (a few thousand characters), so a longer
#: caption is almost always a broken line (a whole document pasted in), and it would be copied into every cache file.
MAX_CAPTION_CHARS = 20_000

VIDEO_FIELDS = ("video_path", "tarsier2_caption")
IMAGE_FIELDS = ("image_path",)
SIMPLE_FIELDS = ("path", "caption")


class ManifestError(ValueError):
    """A manifest line (or the manifest itself) is unusable; the message names ``file:line``."""


@dataclass(frozen=True)
class MediaItem:
    """One video clip or image of a manifest, with its candidate captions.

    ``caption`` is the primary caption (``tarsier2_caption`` for videos, ``text`` for images, ``caption`` in the
    simple form); ``alt_caption`` the optional second one (``MiniCPM_V_2_6_caption`` for videos, ``long_caption`` for
    images). Frames are in the source's own frame rate; ``end_frame`` is exclusive, ``None`` = to the end.
    """

    path: Path
    kind: Literal["video", "image"]
    caption: str
    alt_caption: str | None = None
    quality_prompt: str | None = None
    begin_frame: int = 0
    end_frame: int | None = None
    fps: float | None = None
    where: str = ""  #: ``file:line`` of the manifest line, for messages

    @property
    def is_video(self) -> bool:
        return self.kind == "video"

    def captions_dict(self) -> dict[str, str | None]:
        return {"caption": self.caption, "alt_caption": self.alt_caption, "quality_prompt": self.quality_prompt}

    def to_json(self) -> dict:
        """This item as a line of the original's format (absolute path)."""
        if self.is_video:
            out: dict = {"video_path": str(self.path), "tarsier2_caption": self.caption}
            if self.alt_caption:
                out["MiniCPM_V_2_6_caption"] = self.alt_caption
            out["begin_frame_id"] = self.begin_frame
            if self.end_frame is not None:
                out["end_frame_id"] = self.end_frame
            if self.fps is not None:
                out["fps"] = self.fps
        else:
            out = {"image_path": str(self.path), "text": self.caption}
            if self.alt_caption:
                out["long_caption"] = self.alt_caption
        if self.quality_prompt:
            out["quality_prompt"] = self.quality_prompt
        return out


@dataclass(frozen=True)
class ManifestProblem:
    where: str  #: ``file:line``
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class Manifest:
    """The parsed items and, with ``on_error="skip"``, the lines that were skipped and why."""

    items: list[MediaItem]
    problems: list[ManifestProblem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)


# ----------------------------------------------------------------------------------------------------------------------
# Finding the files


def manifest_files(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The jsonl files of a manifest source: a file, a folder (``**/*.jsonl``, sorted) or a list of those."""
    if isinstance(source, (str, os.PathLike)):
        source = [source]
    files: list[Path] = []
    for entry in source:
        path = Path(entry)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.jsonl") if p.is_file())
            if not found:
                raise ManifestError(f"manifest folder {path} contains no *.jsonl file")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ManifestError(f"manifest not found: {path} (give a .jsonl file, a folder of them, or a list)")
    if not files:
        raise ManifestError("no manifest given")
    return files


# ----------------------------------------------------------------------------------------------------------------------
# Parsing one line


def _text(obj: dict, key: str, *, required: bool, max_chars: int) -> str | None:
    if key not in obj or obj[key] is None:
        if required:
            raise ManifestError(f"missing required field {key!r}")
        return None
    value = obj[key]
    if not isinstance(value, str):
        raise ManifestError(f"field {key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        if required:
            raise ManifestError(f"field {key!r} is empty; a caption describing the media is required")
        return None
    if len(value) > max_chars:
        raise ManifestError(
            f"field {key!r} has {len(value)} characters, at most {max_chars} accepted "
            "(T5 reads only 512 tokens; is the line broken?)"
        )
    return value.strip()


def _frame_id(obj: dict, key: str) -> int | None:
    if key not in obj or obj[key] is None:
        return None
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
        raise ManifestError(f"field {key!r} must be a non-negative integer frame index, got {value!r}")
    return int(value)


def _fps(obj: dict) -> float | None:
    if "fps" not in obj or obj["fps"] is None:
        return None
    value = obj["fps"]
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ManifestError(f"field 'fps' must be a positive number (frames per second), got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ManifestError(f"field 'fps' must be a positive number (frames per second), got {obj['fps']!r}")
    if value > 1000:
        raise ManifestError(f"field 'fps' = {value} is not a video frame rate (accepted: 0 < fps <= 1000)")
    return float(value)


def _resolve(raw: object, key: str, root: Path) -> Path:
    if not isinstance(raw, str) or not raw.strip():
        raise ManifestError(f"field {key!r} must be a non-empty path string, got {raw!r}")
    path = Path(raw.strip()).expanduser()
    return (path if path.is_absolute() else root / path).resolve()


def _check_file(path: Path) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ManifestError(f"media file not found: {path}") from None
    except OSError as exc:
        raise ManifestError(f"media file {path} cannot be accessed: {exc}") from None
    if not path.is_file():
        raise ManifestError(f"media path {path} is not a file")
    if size == 0:
        raise ManifestError(f"media file {path} is empty (0 bytes)")


def parse_line(
    obj: object, root: Path, *, where: str = "", check_files: bool = True, max_caption_chars: int = MAX_CAPTION_CHARS
) -> MediaItem:
    """One decoded JSON line -> :class:`MediaItem`. Raises :class:`ManifestError` (without the location)."""
    if not isinstance(obj, dict):
        raise ManifestError(f"expected a JSON object per line, got {type(obj).__name__}")
    kw = {"max_chars": max_caption_chars}
    quality = _text(obj, "quality_prompt", required=False, **kw)
    if "video_path" in obj:
        path = _resolve(obj["video_path"], "video_path", root)
        caption = _text(obj, "tarsier2_caption", required=True, **kw)
        alt = _text(obj, "MiniCPM_V_2_6_caption", required=False, **kw)
        begin = _frame_id(obj, "begin_frame_id") or 0
        end = _frame_id(obj, "end_frame_id")
        if end is not None and end <= begin:
            raise ManifestError(f"end_frame_id ({end}) must be greater than begin_frame_id ({begin}); end is exclusive")
        item = MediaItem(path, "video", caption, alt, quality, begin, end, _fps(obj), where)
    elif "image_path" in obj:
        path = _resolve(obj["image_path"], "image_path", root)
        short = _text(obj, "text", required=False, **kw)
        long = _text(obj, "long_caption", required=False, **kw)
        if short is None and long is None:
            raise ManifestError("an image entry needs a caption: field 'text' and/or 'long_caption' (non-empty)")
        item = MediaItem(path, "image", short or long, long if short else None, quality, where=where)
    elif "path" in obj:
        path = _resolve(obj["path"], "path", root)
        caption = _text(obj, "caption", required=True, **kw)
        suffix = path.suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            kind = "video"
        elif suffix in IMAGE_SUFFIXES:
            kind = "image"
        else:
            raise ManifestError(
                f"cannot tell whether {path.name} is a video or an image from its extension {suffix!r}; "
                f"accepted: {', '.join(VIDEO_SUFFIXES + IMAGE_SUFFIXES)}"
            )
        begin = _frame_id(obj, "begin_frame_id") or 0
        end = _frame_id(obj, "end_frame_id")
        if end is not None and end <= begin:
            raise ManifestError(f"end_frame_id ({end}) must be greater than begin_frame_id ({begin}); end is exclusive")
        fps = _fps(obj) if kind == "video" else None
        item = MediaItem(path, kind, caption, None, quality, begin, end, fps, where)  # type: ignore[arg-type]
    else:
        raise ManifestError(
            "unknown entry: expected 'video_path' + 'tarsier2_caption' (video), 'image_path' + 'text' (image), "
            f"or 'path' + 'caption'; got fields {sorted(obj)[:10]}"
        )
    if item.is_video and item.path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ManifestError(f"video {item.path.name} has an unsupported type; accepted: {', '.join(VIDEO_SUFFIXES)}")
    if not item.is_video and item.path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ManifestError(f"image {item.path.name} has an unsupported type; accepted: {', '.join(IMAGE_SUFFIXES)}")
    if check_files:
        _check_file(item.path)
    return item


# ----------------------------------------------------------------------------------------------------------------------
# Reading whole manifests


def iter_manifest_lines(path: Path) -> Iterable[tuple[str, object]]:
    """``(file:line, decoded JSON)`` for each non-blank line; malformed JSON raises with the location."""
    with open(path, encoding="utf-8", errors="strict") as f:
        lineno = 0
        while True:
            where = f"{path}:{lineno + 1}"
            try:
                line = f.readline()
            except UnicodeDecodeError as exc:
                raise ManifestError(f"{where}: not UTF-8 text ({exc})") from None
            if not line:
                return
            lineno += 1
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield where, ManifestError(f"malformed JSON ({exc.msg} at column {exc.colno})")
                continue
            yield where, obj


def read_manifest(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    on_error: Literal["raise", "skip"] = "raise",
    check_files: bool = True,
    max_caption_chars: int = MAX_CAPTION_CHARS,
) -> Manifest:
    """Parse a manifest source (file, folder of ``*.jsonl``, or list) into :class:`MediaItem` s.

    ``on_error="raise"``: the first bad line raises :class:`ManifestError` naming ``file:line`` and the reason.
    ``on_error="skip"``: bad lines are logged, collected in ``Manifest.problems`` and skipped.
    ``check_files``: the media file must exist and be non-empty (a cheap ``stat``; decoding is checked later).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    manifest = Manifest([])
    for file in manifest_files(source):
        root = file.resolve().parent
        lines = iter_manifest_lines(file)
        while True:
            try:
                where, obj = next(lines)
            except StopIteration:
                break
            except ManifestError as exc:  # the file itself is unreadable from here on
                if on_error == "raise":
                    raise
                manifest.problems.append(ManifestProblem(str(file), str(exc)))
                log.warning("skipped the rest of manifest %s: %s", file, exc)
                break
            try:
                if isinstance(obj, ManifestError):
                    raise obj
                item = parse_line(obj, root, where=where, check_files=check_files, max_caption_chars=max_caption_chars)
            except ManifestError as exc:
                if on_error == "raise":
                    raise ManifestError(f"{where}: {exc}") from None
                manifest.problems.append(ManifestProblem(where, str(exc)))
                log.warning("skipped %s: %s", where, exc)
                continue
            manifest.items.append(item)
    if not manifest.items and on_error == "raise":
        raise ManifestError(f"manifest {source} lists no media")
    return manifest


def write_manifest(path: str | os.PathLike, items: Iterable[MediaItem]) -> Path:
    """Write items as a jsonl manifest in the original's format (atomically)."""
    from infinitystar.files import write_jsonl

    return write_jsonl(path, (item.to_json() for item in items))
