"""argparse types for the numbers the generating commands take, following the range policy of
:mod:`infinitystar.generation.ranges` (so ``--seed 1e30`` is a usage error naming the range, not an overflow deep
inside torch). Light to import: no torch."""

from __future__ import annotations

import argparse

from infinitystar.generation.ranges import SEED_HELP, check_seed

SEED_FLAG_HELP = (
    f"random seed: {SEED_HELP} (default: random; the seed used is printed, put in the file name and stored)"
)


def seed_arg(text: str) -> int:
    """``--seed``: an int from 0 to 2**63-1, or -1 (a random seed, drawn by the command)."""
    try:
        value = check_seed(text, "the seed")
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return -1 if value is None else value


def count_arg(text: str) -> int:
    """A count >= 1 (``--num-samples``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (give 1 or more)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


#: the choices of ``--resume`` (the training commands); kept here, light, and checked again by the trainers
RESUME_CHOICES = ("latest", "latest-valid")
RESUME_FLAG_HELP = (
    "continue the run in --out: plain --resume = from the newest checkpoint; --resume latest-valid = from the newest "
    "intact one (when the newest is damaged); --resume STEP = from that step"
)


def resume_arg(text: str) -> str | int:
    """``--resume [latest|latest-valid|STEP]``."""
    value = text.strip().lower()
    if value in RESUME_CHOICES:
        return value
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a resume choice; accepted: latest, latest-valid, or a step (>= 1)"
    )
