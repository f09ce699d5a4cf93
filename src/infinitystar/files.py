"""Writing files so that nothing is ever half-written, and the project's one JSON reader and writers.

Every file the package writes (weights, configs, manifests, reports, media) goes through :func:`atomic_write`:
the content is written next to its destination, flushed to disk and renamed into place, so a crash or a
Ctrl-C leaves either the old file or the new one. This module imports no torch: curation workers use it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write_fn: Callable[[str], Any]) -> Path:
    """Write a file through ``write_fn(tmp_path)``, fsync it, then rename it into place.

    The temporary file lives in the destination's folder (a rename across file systems would not be
    atomic) and gets the permissions a plain ``open`` would give (``mkstemp`` makes 0600 files).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write a UTF-8 text file."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def json_text(obj: Any, *, indent: int | None = 2, sort_keys: bool = False, newline: bool = True) -> str:
    """``obj`` as JSON text, non-ASCII characters kept as they are (prompts and captions stay readable)."""
    return json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=False) + ("\n" if newline else "")


def write_json(
    path: str | os.PathLike, obj: Any, *, indent: int | None = 2, sort_keys: bool = False, newline: bool = True
) -> Path:
    """Atomically write ``obj`` as a JSON file (``newline=False`` keeps formats that have no final newline)."""
    return write_text(path, json_text(obj, indent=indent, sort_keys=sort_keys, newline=newline))


def jsonl_text(records: Iterable[Any]) -> str:
    """One compact JSON document per line."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> Path:
    """Atomically write a JSON-lines file (the whole file at once: for appends see :func:`append_jsonl`)."""
    return write_text(path, jsonl_text(records))


def append_jsonl(file, record: Any) -> None:
    """Append one record to an open text file and flush it (a log that a resumed run reads back)."""
    file.write(json.dumps(record, ensure_ascii=False) + "\n")
    file.flush()


def read_json(path: str | os.PathLike, what: str = "file", error: type[Exception] = ValueError) -> Any:
    """The JSON document in ``path``; one ``error`` naming the file for a missing file or invalid JSON."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise error(f"{what} {path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
