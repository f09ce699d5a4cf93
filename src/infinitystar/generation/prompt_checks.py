"""Checks of the items of a prompt file, field by field, before anything is generated.

:mod:`infinitystar.generation.prompt_files` reads a file into items; this module says what is wrong with one record
(a JSON object of a ``.jsonl`` line or of a ``.json`` list) in words that name the field, the value and what is
accepted: a string where a number belongs (``"duration": "2"``), a number where a path or a prompt belongs, a seed
that is not a whole number or out of range. Every bad field of a record is reported, not only the first, so that a
file is fixed in one pass. Bytes that are not UTF-8 are reported with their line.
"""

from __future__ import annotations

import json
import numbers
from typing import Any

from infinitystar.generation.ranges import SEED_HELP, SEED_MAX

_NUMBER = "a number"
#: what each item field accepts, for messages; null (or leaving the field out) means "the default" for every field
FIELD_KINDS: dict[str, str] = {
    "prompt": "a non-empty string",
    "seed": SEED_HELP.replace(", or -1 for a random one", ""),
    "duration": "a number of seconds (0 for an image)",
    "image": "a file path (a string)",
    "video": "a file path (a string)",
    "negative_prompt": "a string",
    "aspect_ratio": "a 'W:H' string such as \"16:9\", or a number (h/w)",
    "name": "a string (the output file name, without suffix)",
}
_STRING_FIELDS = ("prompt", "image", "video", "negative_prompt", "name")


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, (str, int, float, list, dict)) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unquote_hint(value: Any, fits) -> str:
    """' (write 2 without quotes)' when a string holds a JSON value that would have been accepted."""
    if not isinstance(value, str):
        return ""
    try:
        decoded = json.loads(value)
    except ValueError:
        return ""
    return f" (write {value.strip()} without quotes)" if not isinstance(decoded, str) and fits(decoded) else ""


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _is_seed(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= SEED_MAX


def field_problems(record: dict[str, Any]) -> list[str]:
    """What is wrong with the fields of one item record (empty when every field has an accepted type and range)."""
    problems = []
    for key, value in record.items():
        if value is None or key not in FIELD_KINDS:
            continue  # absent = the default; unknown keys are reported by the reader
        if key in _STRING_FIELDS:
            ok = isinstance(value, str) and (key != "prompt" or bool(value.strip()))
            fits = None
        elif key == "seed":
            ok, fits = _is_seed(value), _is_seed
        elif key == "duration":
            ok, fits = _is_number(value), _is_number
        else:  # aspect_ratio
            ok, fits = isinstance(value, str) or _is_number(value), None
        if not ok:
            hint = _unquote_hint(value, fits) if fits is not None else ""
            problems.append(f"'{key}' must be {FIELD_KINDS[key]}, got {_show(value)}{hint}")
    return problems


def vbench_problems(record: dict[str, Any]) -> list[str]:
    """What is wrong with a VBench record (``prompt_en`` and an optional ``refined_prompt``, both strings)."""
    problems = []
    for key in ("prompt_en", "refined_prompt"):
        value = record.get(key)
        if (key == "prompt_en" or value is not None) and (not isinstance(value, str) or not value.strip()):
            problems.append(f"'{key}' must be a non-empty string, got {_show(value)}")
    return problems


def decode_lines(raw: bytes) -> list[tuple[int, str | None, str | None]]:
    """``(line number, text, problem)`` for every line of a file's bytes: a line that is not UTF-8 has no text and a
    problem that names the byte, so that the other lines are still read."""
    out = []
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark (Windows editors write one)
        raw = raw[3:]
    for i, line in enumerate(raw.split(b"\n"), start=1):
        try:
            out.append((i, line.decode("utf-8").rstrip("\r"), None))
        except UnicodeDecodeError as exc:
            byte = line[exc.start]
            out.append(
                (i, None, f"not UTF-8 text (byte 0x{byte:02x} at column {exc.start + 1}); save the file as UTF-8")
            )
    return out


def utf8_problem(raw: bytes, path) -> str | None:
    """Why a whole file's bytes are not UTF-8 (naming the line and how to convert it), or None when they are."""
    for i, _, problem in decode_lines(raw):
        if problem is not None:
            return f"line {i}: {problem} (e.g. iconv -f latin1 -t utf-8 {path} > utf8_{path.name})"
    return None
