"""The files an evaluation reads: generated outputs, reference images, and the rows of earlier scoring runs.

Separate from the metrics (:mod:`infinitystar.evaluation.score`) because finding and decoding an output, and deciding
whether an earlier row still describes it, are the same for every metric and for FVD's real videos. A row is
reused only when its output file (size and modification time), prompt and reference image are unchanged and it
holds every requested metric, so a rerun scores only what changed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from infinitystar.generation.prompt_files import PromptItem

__all__ = [
    "OUTPUT_SUFFIXES",
    "find_output",
    "is_reusable",
    "output_signature",
    "read_frames",
    "read_rows",
    "reference_frame",
    "reference_signature",
]

#: output suffixes looked for, in order: what run_batch writes first, then other media a user may drop in
OUTPUT_SUFFIXES = (".mp4", ".png", ".webm", ".mov", ".mkv", ".avi", ".gif", ".jpg", ".jpeg", ".webp", ".bmp")


def find_output(out_dir: str | Path, item: PromptItem) -> Path | None:
    """The output file of ``item`` in ``out_dir`` (``{name}.mp4``, ``{name}.png``, other media), or None."""
    out_dir = Path(out_dir)
    for suffix in OUTPUT_SUFFIXES:
        path = out_dir / f"{item.name}{suffix}"
        if path.is_file():
            return path
    return None


def read_frames(path: str | Path) -> np.ndarray:
    """An image or video file as uint8 frames ``[T, H, W, 3]`` (RGB), videos resampled to 16 fps.

    Decoded straight to uint8 by :func:`infinitystar.media.read_video_uint8`, on the 16 fps grid of
    :func:`infinitystar.media.read_video`. An unreadable file is a ``MediaError`` (a ``ValueError``).
    """
    from infinitystar.media.decode import decode_image, read_video_uint8
    from infinitystar.media.probe import check_media_file

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"output not found: {path}")
    _, kind = check_media_file(path)
    if kind == "image":
        return np.asarray(decode_image(path))[None]  # [H, W, 3] -> [1, H, W, 3]
    return read_video_uint8(path)


def reference_frame(path: str, hw: tuple[int, int]) -> np.ndarray:
    """The item's image as the pipeline prepared it (cover-resize + centre crop to ``hw``): uint8 ``[1, H, W, 3]``."""
    from infinitystar.media import read_image

    x = read_image(path, size=hw)  # [3, H, W] in [-1, 1]
    return ((x.permute(1, 2, 0).numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)[None]


def output_signature(path: Path) -> dict:
    """What identifies one version of a file (name, size, modification time): a changed output is rescored."""
    st = path.stat()
    return {"file": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def reference_signature(item: PromptItem) -> dict | None:
    """Signature of the item's image (so that a replaced reference is rescored), None without one."""
    return output_signature(Path(item.image)) if item.image and Path(item.image).is_file() else None


def read_rows(path: Path) -> dict[str, dict]:
    """Rows of an earlier scores file by item name (a torn last line of a killed run is ignored)."""
    rows: dict[str, dict] = {}
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("name"), str):
            rows[row["name"]] = row
    return rows


def is_reusable(
    row: dict | None, item: PromptItem, signature: dict, wanted: Sequence[str], clip_id: str | None
) -> bool:
    """Whether an earlier ``row`` still holds ``item``'s scores: same output file, prompt and reference, every
    per-item metric in ``wanted`` computed, and CLIP scores (if wanted) from the same CLIP folder ``clip_id``."""
    if row is None or row.get("output") != signature or row.get("prompt") != item.prompt:
        return False
    if row.get("image") != item.image or row.get("reference") != reference_signature(item):
        return False
    if not set(wanted) <= set(row.get("computed", ())):
        return False
    return "clip" not in wanted or row.get("clip_model") == clip_id
