"""Captions of the procedural world: writing them, parsing them back, and balanced prompt lists.

Every caption follows one grammar::

    a {color} {shape} {motion} on a {background} background      (videos)
    a {color} {shape} on a {background} background               (images)

e.g. ``"a red circle moving right on a black background"``; training captions may start with a ``<<<t=Ns>>>``
duration tag.

Why a module of its own: the grammar is the contract between the world's data, the built-in text encoder, the demo
and the evaluator. Code that only reads or writes captions (prompt files, the evaluator's expectations) should not
need the renderer or the dataset, and the parser's error message is the one place that lists every accepted word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from infinitystar.world.scenes import (
    ALL_COLORS,
    BACKGROUNDS,
    MOTIONS,
    SHAPES,
    Scene,
    _check_split,
    _generator,
    _image_pairs,
    allowed_backgrounds,
    combos,
)

__all__ = ["ParsedCaption", "caption", "parse_caption", "prompts"]


_TAG = re.compile(r"^\s*<<<t=([^>]*)s>>>")


def caption(scene: Scene) -> str:
    """``a {color} {shape} {motion} on a {background} background``; images drop the motion."""
    return _caption_text(scene.color, scene.shape, scene.motion, scene.background)


def _caption_text(color: str, shape: str, motion: str | None, background: str) -> str:
    middle = f"{color} {shape}" if motion is None else f"{color} {shape} {motion}"
    return f"a {middle} on a {background} background"


@dataclass(frozen=True)
class ParsedCaption:
    """The fields of a world caption; ``motion`` is ``None`` for an image caption, ``duration`` the tag's seconds."""

    color: str
    shape: str
    motion: str | None
    background: str
    duration: int | None = None

    @property
    def is_image(self) -> bool:
        return self.motion is None


def _alternatives(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_CAPTION = re.compile(
    rf"^an? (?P<color>{_alternatives(ALL_COLORS)}) (?P<shape>{_alternatives(SHAPES)})"
    rf"(?: (?P<motion>{_alternatives(MOTIONS)}))? on an? (?P<background>{_alternatives(BACKGROUNDS)}) background$"
)

GRAMMAR = "a {color} {shape} [{motion}] on a {background} background"


def parse_caption(text: str) -> ParsedCaption:
    """Parse a world caption, case and whitespace tolerant, with or without a leading ``<<<t=Ns>>>`` tag and a final
    period. Anything else raises one ``ValueError`` that names the grammar and every accepted word."""
    if not isinstance(text, str):
        raise TypeError(f"caption must be a str, got {type(text).__name__}")
    duration = None
    body = text
    tag = _TAG.match(body)
    if tag is not None:
        value = tag.group(1).strip()
        if not value.isdigit():
            raise ValueError(f"caption {text!r} has a malformed duration tag; expected <<<t=Ns>>> with N whole seconds")
        duration = int(value)
        body = body[tag.end() :]
    body = " ".join(body.lower().split()).rstrip(".").rstrip()
    match = _CAPTION.match(body)
    if match is None:
        raise ValueError(
            f"caption {text!r} does not follow the world grammar {GRAMMAR!r} (optionally after a <<<t=Ns>>> tag); "
            f"colors: {', '.join(ALL_COLORS)}; shapes: {', '.join(SHAPES)}; motions: {', '.join(MOTIONS)}; "
            f"backgrounds: {', '.join(BACKGROUNDS)}"
        )
    return ParsedCaption(match["color"], match["shape"], match["motion"], match["background"], duration)


def prompts(
    split: str = "train", n: int = 16, seed: int = 0, *, image: bool = False, colors: tuple[str, ...] | None = None
) -> list[str]:
    """``n`` captions of ``split``, balanced: the split's combinations in a seeded order, cycled, each with a
    background drawn from the allowed ones. Use these as evaluation prompts (they cover every combination equally).
    ``colors``: the colours to draw from (default: the default world's eight; e.g. ``("pink",)``)."""
    _check_split(split)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    g = _generator(seed)
    pool: tuple = _image_pairs(split, colors) if image else combos(split, colors)
    order = torch.randperm(len(pool), generator=g).tolist()
    out = []
    for i in range(n):
        if i and i % len(pool) == 0:
            order = torch.randperm(len(pool), generator=g).tolist()
        item = pool[order[i % len(pool)]]
        backgrounds = allowed_backgrounds(item[0])
        background = backgrounds[int(torch.randint(len(backgrounds), (1,), generator=g))]
        motion = None if image else item[2]
        out.append(_caption_text(item[0], item[1], motion, background))
    return out
