"""Prompts: validation and decoration (pure functions).

The model was trained on prompts carrying a ``<<<t=Ns>>>`` duration tag (videos only); the original inference scripts
also append a fixed suffix. :func:`decorate_prompt` adds both, so users never type them."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from numbers import Real

ORIGINAL_SUFFIX = ", Close-up on big objects, emphasize scale and detail"
"""Appended to every prompt by the original 480p/720p inference scripts (and to the VBench prompts)."""

_DURATION_TAG = re.compile(r"<<<t=([^>]*)s>>>")


# ----------------------------------------------------------------------------------------------------------------------
# Prompt validation and decoration (pure functions)


def check_prompt(prompt: object, name: str = "prompt") -> str:
    """Return ``prompt`` if it is a non-blank string (text that was not valid UTF-8 repaired, see
    :func:`repair_text`); raise a clear error otherwise.

    A blank prompt would silently condition on just ``</s>`` (or on a bare duration tag), which is never what the user
    meant, so it is rejected here rather than deep inside the model.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"{name} must be a str, got {type(prompt).__name__}: {prompt!r:.80}")
    if not prompt.strip():
        where = "" if name == "prompt" else f" ({name})"
        raise ValueError(f"prompt is empty{where}: {prompt!r}; describe the image or video to generate")
    return repair_text(prompt, name, stacklevel=3)


def repair_text(text: str, name: str = "prompt", *, stacklevel: int = 2) -> str:
    """``text`` with undecodable bytes turned back into characters, with a warning; unchanged when it is clean.

    A command line typed in a Latin-1 (or Windows-1252) terminal under a UTF-8 locale reaches Python as lone
    surrogates (``'\\udce9'`` for the byte 0xE9), which no text encoder can encode. Each such byte is read as
    Windows-1252 (Latin-1 for the five bytes it leaves undefined), which is what those terminals send; other lone
    surrogates (half of a UTF-16 pair, e.g. from a JSON escape) become U+FFFD. Valid characters are kept as they are.
    """
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, escaped by Python's surrogateescape
            byte = bytes([code - 0xDC00])
            try:
                out.append(byte.decode("cp1252"))
            except UnicodeDecodeError:
                out.append(byte.decode("latin-1"))
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(ch)
    fixed = "".join(out)
    warnings.warn(
        f"{name} is not valid UTF-8 text (a terminal or file in another encoding?); its undecodable bytes were read "
        f"as Windows-1252 / Latin-1: {fixed!r:.200}. Use a UTF-8 terminal or file to pass it exactly",
        UserWarning,
        stacklevel=stacklevel + 1,
    )
    return fixed


def duration_tag(duration_seconds: float) -> str:
    """The caption prefix ``<<<t={D}s>>>`` for a video of ``duration_seconds``.

    Training mapped each clip's real duration to whole seconds with ``int(seconds)`` (capped at 5 s, or 10 s) and
    wrote that integer in the tag, so the model only ever saw whole seconds. A non-integer duration is therefore
    truncated the same way (5.9 -> ``<<<t=5s>>>``) with a warning; durations under one second are rejected (pass
    ``None`` to ``decorate_prompt`` for an image).
    """
    if isinstance(duration_seconds, bool) or not isinstance(duration_seconds, Real):
        raise TypeError(f"duration_seconds must be a number of seconds, got {type(duration_seconds).__name__}")
    if not math.isfinite(duration_seconds) or duration_seconds < 1:
        raise ValueError(
            f"duration_seconds={duration_seconds!r} is not a video duration the model knows: give at least 1 second "
            "(the released models generate 5 s, and 10 s at 480p), or None for an image"
        )
    whole = int(duration_seconds)
    if whole != duration_seconds:
        warnings.warn(
            f"duration {duration_seconds} s is tagged as <<<t={whole}s>>>: the model was trained on whole seconds "
            "(int(seconds), as in the original data pipeline)",
            stacklevel=2,
        )
    return f"<<<t={whole}s>>>"


def decorate_prompt(prompt: str, duration_seconds: float | None, *, suffix: str | None = None) -> str:
    """Decorate a prompt the way the original trained and sampled it: ``<<<t={D}s>>>`` + prompt (+ suffix).

    - Videos (``duration_seconds`` given) get the duration tag with no space after it; images (``None``) get none.
      Without the tag, videos break (InfinityStar issue #29).
    - ``suffix`` is appended only when given. The original 480p/720p scripts always append ``ORIGINAL_SUFFIX``; pass
      ``suffix=ORIGINAL_SUFFIX`` to reproduce them (and the published VBench numbers).
    - Idempotent: a prompt that already starts with a tag, or already ends with the suffix, is not decorated twice.
      A prompt that carries a tag is kept as written for images; for videos its tag must match the duration asked
      for, otherwise a ``ValueError`` is raised rather than sending two contradicting durations.
    """
    check_prompt(prompt)
    existing = _DURATION_TAG.match(prompt)
    if existing is not None and duration_seconds is not None:
        wanted = duration_tag(duration_seconds)
        if existing.group(0) != wanted:
            raise ValueError(
                f"prompt already starts with {existing.group(0)} but duration_seconds={duration_seconds} asks for "
                f"{wanted}; remove the tag from the prompt or change the duration"
            )
    if suffix and not prompt.endswith(suffix):
        prompt = prompt + suffix
    if existing is None and duration_seconds is not None:
        prompt = duration_tag(duration_seconds) + prompt
    return prompt


def _check_prompt_list(prompts: object) -> list[str]:
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise TypeError(f"prompts must be a list of str, got {type(prompts).__name__} (wrap a single prompt in a list)")
    return [check_prompt(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
