"""What a curation run works on: the input items, read from a folder, a ``.jsonl`` manifest or one media file.

An item is a media file, optionally a frame range of it, with the caption fields an input manifest gave it.
Its ``key`` names it in the resume state and orders the outputs, so the same inputs give the same manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infinitystar.curate.captioner import clean_caption
from infinitystar.media.probe import IMAGE_SUFFIXES, VIDEO_SUFFIXES, media_kind

MANIFEST_PATH_KEYS = ("path", "video_path", "image_path", "file")
# Caption-like fields carried over from an input manifest (the original's names plus a generic "caption").
CAPTION_FIELDS = ("tarsier2_caption", "MiniCPM_V_2_6_caption", "quality_prompt", "caption", "text", "long_caption")


@dataclass(frozen=True)
class InputItem:
    """One thing to curate: a media file, optionally a frame range of it, and caption fields from a manifest."""

    path: str
    kind: str  # "video", "image", or "unknown" (reported as failed)
    begin: int | None = None
    end: int | None = None
    fields: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        """Unique id in the resume state and the sort key of the outputs."""
        if self.begin is None and self.end is None:
            return self.path
        return f"{self.path}#{self.begin or 0}-{'' if self.end is None else self.end}"


def _item_from_line(obj: Any, base: Path, where: str) -> InputItem:
    if isinstance(obj, str):
        obj = {"path": obj}
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object or a path string; got {type(obj).__name__}")
    keys = [k for k in MANIFEST_PATH_KEYS if isinstance(obj.get(k), str) and obj[k].strip()]
    if not keys:
        raise ValueError(f"{where}: no media path; give one of {', '.join(MANIFEST_PATH_KEYS)}")
    path = Path(obj[keys[0]]).expanduser()
    path = path if path.is_absolute() else base / path
    kind = {"video_path": "video", "image_path": "image"}.get(keys[0]) or media_kind(path) or "unknown"
    begin, end = obj.get("begin_frame_id"), obj.get("end_frame_id")
    for name, value in (("begin_frame_id", begin), ("end_frame_id", end)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{where}: {name} must be a non-negative integer; got {value!r}")
    if begin is not None and end is not None and end <= begin:
        raise ValueError(f"{where}: end_frame_id ({end}) must be greater than begin_frame_id ({begin})")
    fields = tuple((k, clean_caption(obj[k])) for k in CAPTION_FIELDS if isinstance(obj.get(k), str) and obj[k].strip())
    return InputItem(str(path.resolve()), kind, begin, end, fields)


def read_input_manifest(path: str | Path) -> list[InputItem]:
    """Items of a jsonl manifest: one JSON object per line (a path under ``path`` / ``video_path`` /
    ``image_path`` / ``file``, optional ``begin_frame_id`` / ``end_frame_id`` and caption fields) or a JSON
    string (a path). Relative paths are relative to the manifest's folder. A bad line is an error naming it."""
    path = Path(path)
    items = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc.msg})") from None
            items.append(_item_from_line(obj, path.parent.resolve(), where))
    return items


def collect_inputs(source: str | Path) -> list[InputItem]:
    """The items of a folder (recursively, supported media only, hidden files skipped), a ``.jsonl`` manifest,
    or a single media file."""
    source = Path(source)
    if source.is_dir():
        items = []
        for p in sorted(source.rglob("*")):
            rel = p.relative_to(source).parts
            if any(part.startswith(".") for part in rel) or not p.is_file():
                continue
            kind = media_kind(p)
            if kind is not None:
                items.append(InputItem(str(p.resolve()), kind))
        return items
    if source.is_file() and source.suffix.lower() == ".jsonl":
        return read_input_manifest(source)
    if source.is_file() and media_kind(source) is not None:
        return [InputItem(str(source.resolve()), media_kind(source))]
    if not source.exists():
        raise ValueError(f"input not found: {source}")
    raise ValueError(
        f"input {source} is neither a folder, a .jsonl manifest nor a media file "
        f"({', '.join(VIDEO_SUFFIXES + IMAGE_SUFFIXES)})"
    )
