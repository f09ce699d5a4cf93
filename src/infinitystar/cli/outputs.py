"""Where a command writes its outputs, checked before any model is loaded.

A generation that takes minutes must not end in "permission denied", "no space left", "unsupported output type" or
"is a directory": :func:`check_output_file` and :func:`check_output_folder` refuse such a destination at once, with
the path and what to do. An explicit output file that exists is refused unless ``--overwrite``; default names never
replace a file (:func:`free_path` adds a numeric suffix).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

#: the output types ``generate`` writes, with what each holds
OUTPUT_SUFFIXES: dict[str, str] = {".mp4": "a video (H.264)", ".gif": "a video", ".png": "an image"}
#: the least free space a destination must have (outputs are written next to their place, then renamed)
MIN_FREE_BYTES = 16 * 2**20


class OutputError(ValueError):
    """A destination a command cannot write to; the message names it and says what to do."""


def _accepted() -> str:
    return ", ".join(f"{s} ({what})" for s, what in OUTPUT_SUFFIXES.items())


def estimate_bytes(frames: int, height: int, width: int, suffix: str) -> int:
    """A generous estimate of an output's size: raw pixels / 20 for H.264 at CRF 18, one byte a pixel for gif and
    raw pixels for png (uncompressed at worst)."""
    pixels = frames * height * width
    return {".mp4": 3 * pixels // 20, ".gif": pixels}.get(suffix, 3 * pixels)


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_folder(folder: str | os.PathLike, what: str, need_bytes: int = 0) -> Path:
    """``folder`` (which may not exist yet: it must then be creatable) checked to be a folder this process can write
    files into, on a disk with ``need_bytes`` (at least :data:`MIN_FREE_BYTES`) free."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder} is a file, not a folder: choose a folder (it is created if missing)")
    base = _existing_ancestor(folder)
    if not base.is_dir():
        raise OutputError(f"{what} {folder} cannot be created: {base} is a file, not a folder")
    if base == folder.absolute():
        try:  # the real test (permissions, read-only mounts, ACLs): create and remove a file there
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise OutputError(
                f"cannot write into {what} {folder}: {exc.strerror or exc}; choose a folder you can write to"
            ) from None
    elif not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {folder} cannot be created: no permission to write into {base}")
    need = max(MIN_FREE_BYTES, need_bytes)
    free = shutil.disk_usage(base).free
    if free < need:
        raise OutputError(
            f"only {free / 2**20:.1f} MB free on the disk of {what} {folder}; the output needs about "
            f"{need / 2**20:.0f} MB: free some space or choose another folder"
        )
    return folder


def check_output_file(
    path: str | os.PathLike, *, image: bool, overwrite: bool, need_bytes: int = 0, what: str = "--out"
) -> Path:
    """``path`` checked as the destination of one output: its type (and that a png is an image), that it is not a
    folder, that it does not exist (unless ``overwrite``), and that its folder is writable with room for it."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(
            f"{what} {path} is a folder: give a file name such as {path / ('image.png' if image else 'video.mp4')} "
            "(a batch writes into --out-dir)"
        )
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        got = f"unsupported output type {path.suffix!r}" if path.suffix else "no file extension"
        raise OutputError(f"{what} {path}: {got}; accepted: {_accepted()}")
    if suffix == ".png" and not image:
        raise OutputError(
            f"{what} {path}: a png holds one image, but this generates a video; use .mp4 or .gif, or --duration 0 for "
            "an image"
        )
    if path.exists() and not overwrite:
        raise OutputError(
            f"{what} {path} exists: pass --overwrite to replace it, or choose another name (without --out the file "
            "is named after the prompt and seed, with a numeric suffix if that name is taken)"
        )
    check_output_folder(path.parent, f"the folder of {what}", need_bytes)
    return path


def free_path(path: str | os.PathLike) -> Path:
    """``path``, or ``{stem}_1{suffix}``, ``{stem}_2{suffix}`` ... the first that does not exist: a default name
    never replaces a file."""
    path = Path(path)
    n = 0
    while True:
        candidate = path if n == 0 else path.with_name(f"{path.stem}_{n}{path.suffix}")
        if not candidate.exists():
            return candidate
        n += 1


def numbered(path: Path, index: int, count: int) -> Path:
    """The name of output ``index`` of ``count`` written for one ``--out`` name: ``clip.mp4`` alone, else
    ``clip-0.mp4``, ``clip-1.mp4`` ... (as the samples of a batch item)."""
    return path if count == 1 else path.with_name(f"{path.stem}-{index}{path.suffix}")


def write_error_message(exc: OSError) -> str | None:
    """A message for an ``OSError`` a user can fix (no permission, disk full, read-only disk, a path that is a file
    or a folder, a missing file), naming the file; None for other errors (a bug: let its traceback show)."""
    user_errnos = {
        errno.EACCES: "no permission",
        errno.EPERM: "not permitted",
        errno.ENOSPC: "no space left on the disk: free some space (finished outputs are kept; a batch resumes)",
        errno.EROFS: "the disk is read-only",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EISDIR: "it is a folder",
        errno.ENOENT: "no such file or folder",
        errno.ENAMETOOLONG: "the name is too long",
        errno.EEXIST: "it exists",
    }
    reason = user_errnos.get(exc.errno)
    if reason is None:
        return None
    where = exc.filename if exc.filename is not None else "a file"
    return f"cannot use {where}: {reason} ({exc.strerror})"


def save_output(result, path: Path, *, explicit: bool, overwrite: bool) -> Path:
    """Write a generation result to ``path`` without losing it or silently replacing a file.

    A default name that got taken meanwhile gets a numeric suffix; so does an explicit ``--out`` that appeared
    during the generation (with a warning), unless ``overwrite``. When the write itself fails for a reason the user
    can fix (disk full, no permission), the result is written to the temporary folder instead and the error says
    where it is.
    """
    import sys

    if path.exists() and not (explicit and overwrite):
        taken, path = path, free_path(path)
        if explicit:
            print(f"infinitystar: warning: {taken} appeared while generating; writing {path} instead", file=sys.stderr)
    try:
        return result.save(path)
    except OSError as exc:
        message = write_error_message(exc)
        if message is None:
            raise
        fallback = free_path(Path(tempfile.gettempdir()) / path.name)
        try:
            result.save(fallback)
        except OSError:
            raise OutputError(f"{message}; the result could not be saved anywhere") from exc
        raise OutputError(f"{message}; the result was saved to {fallback} instead") from exc
