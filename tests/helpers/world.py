"""Scenes of the procedural world chosen by their colour-shape-motion combination (shared by the world tests)."""

from __future__ import annotations

import torch

from infinitystar.world.scenes import HELDOUT_COMBOS, Scene, sample_scene


def scene_for(combo, seed: int, background: str = "black") -> Scene:
    """A sampled scene of exactly ``combo`` (size and path drawn from ``seed``)."""
    split = "heldout" if combo in HELDOUT_COMBOS else "train"
    g = torch.Generator().manual_seed(seed)
    while True:
        s = sample_scene(g, split)
        if s.motion == combo[2]:
            return Scene(combo[0], combo[1], combo[2], background, s.size, s.start, s.speed)
