"""The range policy for the numbers a generation takes: seeds, guidance scale, temperatures.

One place for the CLI (``--seed``, ``--guidance-scale``, ``--temperatures``), the pipeline and the batch-file checks,
so that a value is accepted, warned about or refused the same way everywhere:

- seed: a whole number from 0 to 2**63 - 1 (what ``torch.Generator.manual_seed`` takes without overflow); ``-1`` or
  ``None`` = a random seed, drawn here and returned, so that it can be printed and stored with the output;
- guidance scale: a finite number >= 0 (1 = no guidance; 0 = the unconditional prediction alone); a negative scale
  steers away from the prompt and is refused; above :data:`GUIDANCE_WARN_ABOVE` a warning (the released models use
  34, the built-in model 3; far larger scales saturate the bits into noise);
- temperatures: finite numbers >= :data:`TEMPERATURE_MIN` (smaller ones are greedy sampling already and overflow the
  scaled logits); above :data:`TEMPERATURE_WARN_ABOVE` a warning (the bits approach coin flips: noise).

Refusals raise :class:`RangeError` (a ``ValueError``) or ``TypeError``, naming the value and the accepted range.
"""

from __future__ import annotations

import math
import numbers
import secrets
import warnings
from collections.abc import Iterable

SEED_MAX = 2**63 - 1
#: the seed value that asks for a random seed (as in most generation tools)
RANDOM_SEED = -1
#: random seeds are drawn below this bound: short enough to read, type and put in a file name
RANDOM_SEED_BITS = 31
GUIDANCE_WARN_ABOVE = 100.0
TEMPERATURE_MIN = 1e-3
TEMPERATURE_WARN_ABOVE = 3.0

SEED_HELP = f"a whole number from 0 to 2**63-1 ({SEED_MAX}), or -1 for a random one"


class RangeError(ValueError):
    """A number outside the range a generation accepts; the message names the value and the range."""


def check_seed(seed: object, name: str = "seed") -> int | None:
    """``seed`` as an int, or None for a random seed (``None`` or ``-1``); anything else outside 0 .. 2**63-1 is
    refused (a string of digits from a command line or a file is accepted)."""
    if seed is None:
        return None
    if isinstance(seed, bool):
        raise TypeError(f"{name} must be {SEED_HELP}; got the boolean {seed}")
    if isinstance(seed, str):
        text = seed.strip()
        try:
            seed = int(text)
        except ValueError:
            raise RangeError(f"{name} {text!r} is not a whole number: give {SEED_HELP}") from None
    elif isinstance(seed, numbers.Real) and not isinstance(seed, numbers.Integral):
        if not (math.isfinite(seed) and float(seed).is_integer()):
            raise RangeError(f"{name} {seed!r} is not a whole number: give {SEED_HELP}")
        seed = int(seed)
    elif not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be {SEED_HELP}; got {type(seed).__name__} {seed!r:.60}")
    seed = int(seed)
    if seed == RANDOM_SEED:
        return None
    if not 0 <= seed <= SEED_MAX:
        raise RangeError(f"{name} {seed} is out of range: give {SEED_HELP}")
    return seed


def draw_seed() -> int:
    """A random seed (31 bits: every seed the package draws also fits a 32-bit tool)."""
    return secrets.randbits(RANDOM_SEED_BITS)


def resolve_seed(seed: object, name: str = "seed") -> int:
    """The seed a generation runs with: ``seed`` checked, or a random one for ``None`` / ``-1``."""
    checked = check_seed(seed, name)
    return draw_seed() if checked is None else checked


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r:.60}")
    x = float(value)
    if not math.isfinite(x):
        raise RangeError(f"{name} must be a finite number, got {value!r}")
    return x


def check_guidance_scale(scale: object, *, stacklevel: int = 2) -> float | None:
    """``scale`` as a float (None stays None: the model's default); refused when negative or not finite, a warning
    when above :data:`GUIDANCE_WARN_ABOVE`."""
    if scale is None:
        return None
    x = _number(scale, "guidance scale")
    if x < 0:
        raise RangeError(
            f"guidance scale {scale!r} is negative: accepted are numbers >= 0 (1 = no guidance; the released models "
            "use 34, the built-in model 3)"
        )
    if x > GUIDANCE_WARN_ABOVE:
        warnings.warn(
            f"guidance scale {x:g} is far above the range models are used with (1 to {GUIDANCE_WARN_ABOVE:g}; 34 for "
            "the released models, 3 for the built-in one): expect saturated colours or noise",
            UserWarning,
            stacklevel=stacklevel + 1,
        )
    return x


def check_temperatures(values: Iterable[object], *, stacklevel: int = 2) -> tuple[float, ...]:
    """Sampling temperatures as floats: each finite and >= :data:`TEMPERATURE_MIN`; a warning for any above
    :data:`TEMPERATURE_WARN_ABOVE`."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"temperatures must be a sequence of numbers (image, video), got {values!r:.60}")
    out = tuple(_number(v, "temperature") for v in values)
    if not out:
        raise RangeError("temperatures is empty: give two numbers (image, video) such as (1, 0.4)")
    low = [v for v in out if v < TEMPERATURE_MIN]
    if low:
        raise RangeError(
            f"temperatures must be >= {TEMPERATURE_MIN:g} (smaller ones overflow the scaled logits; 0.01 is already "
            f"nearly greedy sampling), got {list(out)}"
        )
    high = [v for v in out if v > TEMPERATURE_WARN_ABOVE]
    if high:
        warnings.warn(
            f"temperature {high[0]:g} is above {TEMPERATURE_WARN_ABOVE:g}: the sampled bits approach coin flips, "
            "expect noise (the released defaults are 1 for the image pyramid and 0.4 for video clips)",
            UserWarning,
            stacklevel=stacklevel + 1,
        )
    return out
