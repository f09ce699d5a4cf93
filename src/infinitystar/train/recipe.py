"""Training recipes: JSON files of a trainer's settings, read with one clear error for every way they can be wrong.

The dict a recipe holds is turned into a trainer config by :func:`infinitystar.config_dicts.from_dict` (unknown keys
and wrong types named), after ``--set key.path=value`` overrides (:func:`infinitystar.config_dicts.apply_overrides`).
"""

from __future__ import annotations

import json
from pathlib import Path


def read_recipe(path: str | Path, what: str = "recipe") -> dict:
    """The JSON object of a recipe file, with one clear error for a missing file, bad JSON or a non-object."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what} file not found: {p} (expected a JSON file)")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} {p} is not valid JSON: {exc}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{what} {p} must hold a JSON object, got {type(d).__name__}")
    return d
