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
    """``n`` balanced world captions of ``split`` (``train`` / ``heldout``); ``image``: image captions (no motion)."""

    split: str
    n: int
    image: bool = False

    def __post_init__(self) -> None:
        from infinitystar.world.scenes import SPLITS

        if self.split not in SPLITS:
            raise ValueError(f"unknown world split {self.split!r}; accepted: {', '.join(SPLITS)}")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"the number of world prompts must be a positive int, got {self.n!r}")

    @property
    def label(self) -> str:
        return f"{self.split}-image" if self.image else self.split


def parse_world_spec(text: str) -> list[WorldPromptSet]:
    """``"heldout:100,train:100"`` -> prompt sets; ``SPLIT-image:N`` asks for image captions of a split."""
    sets: list[WorldPromptSet] = []
    accepted = "SPLIT:N[,SPLIT:N...] with SPLIT one of train, heldout, train-image, heldout-image (e.g. heldout:100)"
    for part in (p.strip() for p in str(text).split(",")):
        name, sep, count = part.partition(":")
        if not sep or not count.strip().isdigit():
            raise ValueError(f"bad world prompt set {part!r}; accepted: {accepted}")
        split, _, kind = name.strip().lower().partition("-")
        if kind not in ("", "image"):
            raise ValueError(f"bad world prompt set {part!r}; accepted: {accepted}")
        sets.append(WorldPromptSet(split, int(count), image=kind == "image"))
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
        for i, text in enumerate(prompts(s.split, s.n, seed, image=s.image)):
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
