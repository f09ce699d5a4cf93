"""Training recipes that ship with the package, so an installed wheel can name them: ``infinitystar train --recipe
finetune_8b_480p`` (or ``--config`` with a path to your own JSON).

- ``tiny_cpu``: the transformer trainer on random latents, a few seconds on a CPU;
- ``finetune_8b_480p``: fine-tune the released 8B at 480p on 8 GPUs (FSDP2, the original's settings);
- ``tokenizer_tiny_cpu``: the tokenizer trainer (``train-tokenizer``) on a CPU.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path


def recipe_names() -> list[str]:
    """The packaged recipes, by name (file name without ``.json``)."""
    folder = importlib.resources.files(__name__)
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def recipe_path(name: str) -> Path:
    """The file of a packaged recipe; ``ValueError`` naming the recipes there are for an unknown name."""
    if name not in recipe_names():
        raise ValueError(f"unknown recipe {name!r}; packaged recipes: {', '.join(recipe_names())} (or --config FILE)")
    return Path(str(importlib.resources.files(__name__).joinpath(f"{name}.json")))
