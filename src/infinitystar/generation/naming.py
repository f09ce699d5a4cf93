"""Output file names: one rule for every entry point (CLI, batch runner, web demo).

A generated file is named ``{prompt slug}_seed{seed}.mp4`` (``.png`` for an image), so the seed that reproduces
it is always in its name, and the CLI and the web demo name the same prompt the same way.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_CLAIM_LOCK = threading.Lock()


def slugify(text: str, limit: int = 60) -> str:
    """Lower-case words joined by underscores: a readable, shell-friendly file stem (``prompt`` when empty)."""
    words = "".join(ch if ch.isalnum() else " " for ch in text.lower()).split()
    return "_".join(words)[:limit].rstrip("_") or "prompt"


def default_filename(prompt: str, seed: int, image: bool, index: int | None = None) -> str:
    """``{prompt slug}_seed{seed}.mp4`` (``.png`` for an image; ``_{index}`` before the suffix when given)."""
    suffix = f"_{index}" if index is not None else ""
    return f"{slugify(prompt)}_seed{seed}{suffix}.{'png' if image else 'mp4'}"


def unique_path(folder: str | os.PathLike, name: str) -> Path:
    """``folder/name``, or ``name`` with ``_1``, ``_2`` ... before the suffix when that file exists.

    The name is claimed (an empty file is created, atomically with the existence check) so that two
    generations running at once never pick the same name; the result is then written over it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem, suffix = Path(name).stem, Path(name).suffix
    with _CLAIM_LOCK:
        n = 0
        while True:
            path = folder / (name if n == 0 else f"{stem}_{n}{suffix}")
            try:
                path.touch(exist_ok=False)
                return path
            except FileExistsError:
                n += 1
