"""What one pipeline call generates: how prompts, ``window_prompts``, ``num_videos_per_prompt`` and seeds become a
list of independent generations (pure functions, no model).

The convention is diffusers': a ``str`` prompt is one output, a list of prompts is a batch of independent outputs (a
list of results, prompt by prompt, ``num_videos_per_prompt`` each). The prompts of the windows of one long video are
given explicitly with ``window_prompts=``. Sample ``k`` of every prompt uses ``seed + k``, so that
``pipe([a, b], seed=5)[1]`` is ``pipe(b, seed=5)``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from infinitystar.generation.ranges import SEED_MAX, RangeError, check_seed, resolve_seed
from infinitystar.text.prompts import check_prompt

#: the largest batch one call accepts (a guard against ``num_videos_per_prompt=1e9``; loop for more)
MAX_CALL_OUTPUTS = 10_000


@dataclass(frozen=True)
class Job:
    """One output of a call: its prompts (one, or one per window), seed and generator (None: seeded from ``seed``)."""

    prompts: tuple[str, ...]
    seed: int
    generator: torch.Generator | None = None


@dataclass(frozen=True)
class CallPlan:
    jobs: list[Job]
    single: bool  #: return one result (a ``str`` prompt or ``window_prompts``, one video), not a list
    from_list: bool  #: the prompts came as a list (a batch)


def _prompt_list(value: object, name: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a str or a list of str, got {type(value).__name__}: {value!r:.80}")
    if len(value) == 0:
        raise ValueError(f"prompt is empty: {name} is an empty list; give at least one prompt")
    return [check_prompt(p, f"{name}[{i}]") for i, p in enumerate(value)]


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"num_videos_per_prompt must be a whole number >= 1, got {value!r:.60}")
    if not 1 <= int(value) <= MAX_CALL_OUTPUTS:
        raise RangeError(f"num_videos_per_prompt must be from 1 to {MAX_CALL_OUTPUTS}, got {value}")
    return int(value)


def plan_calls(
    prompt: object,
    window_prompts: object,
    num_videos_per_prompt: object,
    seed: object,
    generator: torch.Generator | None,
) -> CallPlan:
    """Check the prompt, count and seed arguments of a call and list its outputs (nothing is generated).

    ``seed`` None or -1 draws a random seed (the same base for every prompt of a batch); a ``generator`` is for one
    output only (the outputs of a batch must each be reproducible from their own seed).
    """
    count = _count(num_videos_per_prompt)
    if window_prompts is not None:
        if prompt is not None:
            raise ValueError("give prompt= (one prompt, or a list: a batch of videos) or window_prompts= (one prompt "
                             "per window of one long video), not both")  # fmt: skip
        groups = [tuple(_prompt_list(window_prompts, "window_prompts"))]
        from_list = False
    elif prompt is None:
        raise TypeError("a prompt is needed: pipe('a cat surfing a wave', ...)")
    elif isinstance(prompt, str):
        groups, from_list = [(check_prompt(prompt),)], False
    else:
        groups, from_list = [(p,) for p in _prompt_list(prompt, "prompt")], True
    if len(groups) * count > MAX_CALL_OUTPUTS:
        raise RangeError(f"{len(groups)} prompts x {count} videos is more than {MAX_CALL_OUTPUTS} outputs in one call")
    single = not from_list and count == 1
    if generator is not None:
        if not single:
            raise ValueError(
                "generator= serves one output; for several (a list of prompts or num_videos_per_prompt > 1) pass "
                "seed= instead: output k of each prompt uses seed + k, so each can be reproduced alone"
            )
        checked = check_seed(seed)
        used = int(generator.initial_seed()) if checked is None else checked
        return CallPlan([Job(groups[0], used, generator)], single, from_list)
    base = resolve_seed(seed)
    if base + count - 1 > SEED_MAX:
        raise RangeError(f"seed {base} + {count - 1} (one seed per video) is beyond the largest seed, {SEED_MAX}")
    jobs = [Job(g, base + k) for g in groups for k in range(count)]
    return CallPlan(jobs, single, from_list)
