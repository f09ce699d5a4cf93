"""Prompt files of procedural-world captions for ``infinitystar evaluate --world-prompts``.

Separate from scoring (:mod:`infinitystar.evaluation.score`) because writing the prompts comes first and needs no
outputs, frames or metrics: it turns a spec such as ``heldout:100,train:100`` into a jsonl prompt file whose
captions follow the world's grammar (:mod:`infinitystar.world.dataset`), so that the scorer can later check colour,
shape and motion analytically, split by combinations seen or held out in training.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infinitystar.files import write_jsonl
from infinitystar.generation.naming import slugify

__all__ = [
    "WORLD_PROMPTS_FILE",
    "WorldPromptSet",
    "parse_world_spec",
    "world_prompt_records",
    "write_world_prompt_file",
    "write_world_prompts",
]

#: the prompt file ``infinitystar evaluate --world-prompts`` writes into the output folder
WORLD_PROMPTS_FILE = "world_prompts.jsonl"


@dataclass(frozen=True)
class WorldPromptSet:
    """``n`` balanced world captions of ``split`` (``train`` / ``heldout``); ``image``: image captions (no motion);
    ``color``: a new colour (``pink``) whose own split is drawn instead of the default world."""

    split: str
    n: int
    image: bool = False
    color: str | None = None

    def __post_init__(self) -> None:
        from infinitystar.world.scenes import NEW_COLORS, SPLITS

        if self.split not in SPLITS:
            raise ValueError(f"unknown world split {self.split!r}; accepted: {', '.join(SPLITS)}")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"the number of world prompts must be a positive int, got {self.n!r}")
        if self.color is not None and self.color not in NEW_COLORS:
            raise ValueError(f"unknown new world colour {self.color!r}; accepted: {', '.join(NEW_COLORS)}")

    @property
    def label(self) -> str:
        base = f"{self.split}-image" if self.image else self.split
        return base if self.color is None else f"{self.color}-{base}"


def parse_world_spec(text: str) -> list[WorldPromptSet]:
    """``"heldout:100,train:100"`` -> prompt sets; ``SPLIT-image:N`` asks for image captions of a split and
    ``COLOR-SPLIT:N`` for the split of a new colour (``pink-heldout:100``)."""
    from infinitystar.world.scenes import NEW_COLORS

    sets: list[WorldPromptSet] = []
    accepted = (
        "SPLIT:N[,SPLIT:N...] with SPLIT one of train, heldout, train-image, heldout-image, optionally after a new "
        f"colour ({', '.join(f'{c}-' for c in NEW_COLORS)}) (e.g. heldout:100, pink-heldout:100)"
    )
    for part in (p.strip() for p in str(text).split(",")):
        name, sep, count = part.partition(":")
        if not sep or not count.strip().isdigit():
            raise ValueError(f"bad world prompt set {part!r}; accepted: {accepted}")
        words = name.strip().lower().split("-")
        color = words.pop(0) if len(words) > 1 and words[0] in NEW_COLORS else None
        split, kind = words[0], "-".join(words[1:])
        if kind not in ("", "image"):
            raise ValueError(f"bad world prompt set {part!r}; accepted: {accepted}")
        sets.append(WorldPromptSet(split, int(count), image=kind == "image", color=color))
    labels = [s.label for s in sets]
    if len(set(labels)) != len(labels):
        raise ValueError(f"world prompt sets repeat a split: {text!r}; give each split once")
    return sets


def world_prompt_records(sets: Iterable[WorldPromptSet], seed: int = 0) -> list[dict]:
    """Prompt-file records (``prompt``, ``name``, and ``duration: 0`` for images) of world captions.

    Names are ``{split}_{index:04d}_{caption slug}``, so files from different splits never collide and say what they
    show. Captions come from :func:`infinitystar.world.captions.prompts`: the split's combinations in a seeded order,
    each equally often.
    """
    from infinitystar.world.captions import prompts

    records = []
    for s in sets:
        prefix = s.label.replace("-", "_")
        colors = None if s.color is None else (s.color,)
        for i, text in enumerate(prompts(s.split, s.n, seed, image=s.image, colors=colors)):
            record: dict[str, Any] = {"prompt": text, "name": f"{prefix}_{i:04d}_{slugify(text, 80)}"}
            if s.image:
                record["duration"] = 0
            records.append(record)
    return records


def write_world_prompt_file(path: str | Path, sets: str | Sequence[WorldPromptSet], seed: int = 0) -> Path:
    """Write a jsonl prompt file of world captions (``sets``: prompt sets or a spec such as ``heldout:100``)."""
    if isinstance(sets, str):
        sets = parse_world_spec(sets)
    return write_jsonl(path, world_prompt_records(sets, seed))


def write_world_prompts(path: str | Path, split: str, n: int, seed: int = 0, *, image: bool = False) -> Path:
    """Write ``n`` world captions of one ``split`` as a jsonl prompt file for ``infinitystar evaluate``."""
    return write_world_prompt_file(path, [WorldPromptSet(split, n, image)], seed)
