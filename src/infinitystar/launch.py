"""Where this process sits in a ``torchrun`` launch: read once here for every command that shards work.

Batch generation, evaluation and latent extraction split their items by rank without any collective
communication, so they only need the launcher's environment, not an initialised process group.
"""

from __future__ import annotations

import os


def torchrun_env() -> tuple[int, int, int]:
    """``(RANK, WORLD_SIZE, LOCAL_RANK)`` from the environment; ``(0, 1, 0)`` outside torchrun."""

    def env(name: str, default: int) -> int:
        raw = os.environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None

    rank, world, local = env("RANK", 0), env("WORLD_SIZE", 1), env("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} / WORLD_SIZE={world} are inconsistent (need 0 <= RANK < WORLD_SIZE)")
    return rank, world, local


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (it sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank_device(device: str | None, local_rank: int, world: int) -> str | None:
    """The device a rank uses: the one asked for, else with several ranks its own GPU (or the CPU)."""
    if device is None and world > 1:
        import torch

        return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    return device
