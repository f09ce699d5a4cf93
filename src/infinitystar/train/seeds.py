"""Stable seeds for the trainers' random draws: one derivation, the same on every machine and Python run.

Every random draw of a training run comes from a generator seeded by the run's seed and the draw's
coordinates (step, sample key, purpose...), never from a global generator. So a resumed run repeats
the draws of an uninterrupted one, and a draw does not depend on which rank makes it. ``hash()`` is
salted per process, hence a digest of the parts' ``repr``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

__all__ = ["derive_seed", "make_generator"]


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from printable parts (ints, strings, tuples of them), stable across processes and runs."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def make_generator(device: torch.device | str, *parts: Any) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded by :func:`derive_seed` of ``parts``."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(derive_seed(*parts))
    return g
