"""Checks on what a person types or uploads in the web demo, and the limits they are checked against.

Separate from the handlers (:mod:`infinitystar.app.handlers`) and the page (:mod:`infinitystar.app.page`) because
these functions need neither a model nor gradio: they take the page's raw values (floats, None, temporary
upload paths) and either return a clean value or raise :class:`DemoInputError` with a message meant for the
person at the page. The page and the tests call the same code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: the four modes, in the order of the page's tabs
MODES: tuple[str, ...] = ("text-to-video", "text-to-image", "image-to-video", "continuation")
#: what the upload boxes accept (the formats the pipeline reads and browsers produce)
IMAGE_UPLOAD_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp")
VIDEO_UPLOAD_SUFFIXES: tuple[str, ...] = (".mp4", ".webm", ".mov")
#: aspect ratios offered (W:H); each maps to the nearest of the model's 15 templates
ASPECT_RATIOS: tuple[str, ...] = ("16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "2:1", "1:2", "21:9", "9:21")
#: the dropdown value meaning "take the aspect ratio of the uploaded image or video"
AUTO_ASPECT = "auto"
#: seeds the page accepts (what a person types; torch takes any 64-bit value)
MAX_SEED = 2**32 - 1
PROMPT_MAX_CHARS = 2000
#: how the status box next to an upload starts when the file is rejected
UPLOAD_ERROR_PREFIX = "Rejected: "

__all__ = [
    "ASPECT_RATIOS",
    "AUTO_ASPECT",
    "DemoInputError",
    "IMAGE_UPLOAD_SUFFIXES",
    "MAX_SEED",
    "MODES",
    "PROMPT_MAX_CHARS",
    "UPLOAD_ERROR_PREFIX",
    "VIDEO_UPLOAD_SUFFIXES",
    "accepted_suffixes",
    "check_choice",
    "check_number",
    "check_prompt_text",
    "check_upload",
    "inspect_upload",
    "resolve_seed",
]


class DemoInputError(ValueError):
    """An input the demo rejects; the message says what was wrong and what is accepted, and is shown in the page."""


def check_prompt_text(prompt: Any) -> str:
    """The prompt stripped of surrounding blanks; an empty or overlong prompt is a clear error."""
    if prompt is None or not isinstance(prompt, str) or not prompt.strip():
        raise DemoInputError("the prompt is empty: describe the image or video to generate")
    prompt = prompt.strip()
    if len(prompt) > PROMPT_MAX_CHARS:
        raise DemoInputError(f"the prompt has {len(prompt)} characters; at most {PROMPT_MAX_CHARS} are accepted")
    return prompt


def resolve_seed(seed: Any, randomize: bool) -> int | None:
    """The seed to generate with, or None to let the pipeline draw one (it returns the seed it drew).

    The page's number box gives floats or None; only whole numbers 0 .. 2**32 - 1 are accepted.
    """
    if randomize:
        return None
    if seed is None or (isinstance(seed, str) and not seed.strip()):
        raise DemoInputError(f"no seed given: type a whole number from 0 to {MAX_SEED}, or tick 'random seed'")
    try:
        value = float(seed)
    except (TypeError, ValueError):
        raise DemoInputError(f"seed {seed!r} is not a number: give a whole number from 0 to {MAX_SEED}") from None
    if not math.isfinite(value) or value != int(value) or not 0 <= value <= MAX_SEED:
        raise DemoInputError(f"seed {seed!r} is not accepted: give a whole number from 0 to {MAX_SEED}")
    return int(value)


def accepted_suffixes(suffixes: Sequence[str]) -> str:
    """``(".png", ".jpg")`` -> ``"png, jpg"``: how messages and labels list the accepted file types."""
    return ", ".join(s.lstrip(".") for s in suffixes)


def check_upload(path: Any, kind: str, max_bytes: int) -> Path:
    """Check an uploaded image or video before the model sees it; return its path.

    ``kind`` is 'image' or 'video'. Checks, in order: something was uploaded, the file exists, its
    type is accepted, its size is within ``max_bytes``, and it decodes (an image fully; a video has a
    video stream whose first frame decodes). Each failure is one :class:`DemoInputError` naming the
    file and saying what is accepted.
    """
    if kind not in ("image", "video"):
        raise ValueError(f"kind must be 'image' or 'video', got {kind!r}")
    suffixes = IMAGE_UPLOAD_SUFFIXES if kind == "image" else VIDEO_UPLOAD_SUFFIXES
    limit = f"{max_bytes / 2**20:g} MB"
    accepted = f"accepted: {accepted_suffixes(suffixes)} up to {limit}"
    if path is None or (isinstance(path, str) and not path):
        raise DemoInputError(f"no {kind} uploaded: upload one ({accepted})")
    path = Path(str(path))
    if not path.is_file():
        raise DemoInputError(f"the uploaded {kind} {path.name!r} is no longer on the server; upload it again")
    if path.suffix.lower() not in suffixes:
        raise DemoInputError(
            f"{path.name!r} is not a supported {kind} type ({path.suffix or 'no extension'}); {accepted}"
        )
    size = path.stat().st_size
    if size > max_bytes:
        raise DemoInputError(f"{path.name!r} is {size / 2**20:.1f} MB, larger than the {limit} limit")
    if size == 0:
        raise DemoInputError(f"{path.name!r} is empty (0 bytes); {accepted}")
    _check_decodes(path, kind, accepted)
    return path


def _check_decodes(path: Path, kind: str, accepted: str) -> None:
    """The upload decodes (an image fully, a video's first frame): a broken file fails here, not inside the model.

    The message names only the file's name (the path is the server's temporary copy) and what was wrong.
    """
    from infinitystar.media.decode import verify_decodes
    from infinitystar.media.probe import MediaError

    try:
        info = verify_decodes(path, kind)
    except MediaError as exc:
        reason = exc.reason or f"it is corrupt or not {'an image' if kind == 'image' else 'a video'}"
        raise DemoInputError(f"cannot read the {kind} {path.name!r}: {reason} ({accepted})") from exc
    if kind == "image" and min(info.width, info.height) < 2:
        raise DemoInputError(f"the image {path.name!r} is {info.width}×{info.height} pixels; it must be at least 2×2")


def inspect_upload(path: Any, kind: str, max_bytes: int) -> tuple[str | None, str]:
    """What the page shows right after an upload: (preview path or None, status markdown).

    Unlike :func:`check_upload` this never raises for a bad file: the message goes to the status box
    next to the upload, where it stays until the next upload.
    """
    if path is None:
        return None, ""
    try:
        ok = check_upload(path, kind, max_bytes)
    except DemoInputError as exc:
        return None, f"{UPLOAD_ERROR_PREFIX}{exc}"
    return str(ok), f"Ready: {ok.name} ({ok.stat().st_size / 2**20:.2f} MB)"


def check_choice(value: Any, choices: Sequence[str], what: str) -> str:
    """``value`` if it is one of ``choices`` (a dropdown can be bypassed through gradio's API), else a clear error."""
    if value not in choices:
        raise DemoInputError(f"unknown {what} {value!r}; accepted: {', '.join(choices)}")
    return value


def check_number(value: Any, what: str, low: float, high: float) -> float:
    """A finite number in [low, high] (the page's sliders and number boxes give floats or None)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DemoInputError(f"{what} must be a number from {low:g} to {high:g}, got {value!r}") from None
    if not (math.isfinite(x) and low <= x <= high):
        raise DemoInputError(f"{what} must be a number from {low:g} to {high:g}, got {value!r}")
    return x
