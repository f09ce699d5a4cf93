"""Variable-length training sequences: which subset of a schedule's scales one step trains.

The original (``train_with_var_seq_len=1``) quantises every scale of a sample and then keeps
*one* subset of scales in the training sequence, drawn from a fixed table of options with fixed
probabilities (reference section 6.6). Small scales are cheap and carry the structure, the
full-size scales of a clip are expensive: the table mixes short sequences (the image pyramid
alone is the most likely option) with a few long ones, so that the average sequence is a
fraction of the full schedule.

The table (``s`` = scales per pyramid, indices into the schedule), defined for ``s >= 14``:

- 2 clips (5 s): ``range(s)``, ``range(s+8)``, ``range(s+11)``, ``range(s+11)+[s+11]``,
  ``range(s+11)+[s+12]``, ``range(s+8)+[s+13]``; without ``drop_last_scale`` (only meaningful
  when ``s >= 15``, the 720p pyramid) the last one is replaced by ``[s-1, s+13]`` and
  ``[s-1, s+14]``.
- 3 clips (10 s): the first five above, ``range(s+11)+[s+13]``, then ``[s-1, 2s-1] +
  range(2s, 2s+11)`` (twice), ``[s-1, 2s-1, 2s+11]``, ``[s-1, 2s-1, 2s+12]``,
  ``[s-1, 2s-1, 2s+13]``.

Probabilities are the configured weights (the original's 480p
``[40,30,20,6,3,1,60,40,12,6,2]`` by default) truncated to the number of options and
normalised.

**General rule** for schedules the table does not cover (pyramids of fewer than 14 scales such
as test schedules, more than 3 clips), written to keep the table's intent:

- an image schedule (one clip) trains all its scales (the original's table breaks on images,
  so its released config cannot train them at all);
- otherwise the options are the image pyramid alone, and for every video clip ``c``: its context
  plus all its scales but the largest, and its context plus its largest scale alone, where the
  context is the whole image pyramid for clip 1 (as in the table) and the chain of largest
  scales of the earlier clips for later clips;
- all options are equally likely.

Whatever the option, every scale a kept scale attends to (``Scale.ref_scales``) is kept too.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from infinitystar.schedule import Schedule

#: pyramids at least this long use the original's table
TABLE_MIN_SCALES = 14


def with_references(schedule: Schedule, kept) -> tuple[int, ...]:
    """``kept`` plus every scale a kept scale attends to, recursively, sorted."""
    n = len(schedule.scales)
    out: set[int] = set()
    todo = [int(i) for i in kept]
    while todo:
        i = todo.pop()
        if not 0 <= i < n:
            raise ValueError(f"scale index {i} is outside the schedule's {n} scales")
        if i not in out:
            out.add(i)
            todo.extend(schedule.scales[i].ref_scales)
    if not out:
        raise ValueError("a scale subset must keep at least one scale")
    return tuple(sorted(out))


def original_options(schedule: Schedule, drop_last_scale: bool = True) -> list[tuple[int, ...]] | None:
    """The original's table of options for this schedule, or None where it does not apply."""
    s, clips = schedule.scales_per_clip, schedule.num_clips
    if s < TABLE_MIN_SCALES or clips not in (2, 3):
        return None
    r = lambda n: list(range(n))  # noqa: E731 - the table reads best in the original's notation
    head = [r(s), r(s + 8), r(s + 11), r(s + 11) + [s + 11], r(s + 11) + [s + 12]]
    if clips == 2 and (drop_last_scale or s < 15):
        opts = [*head, r(s + 8) + [s + 13]]
    elif clips == 2:  # the 720p pyramid with its last scale
        opts = [*head, [s - 1, s + 13], [s - 1, s + 14]]
    else:
        ctx = [s - 1, 2 * s - 1]
        second = ctx + list(range(2 * s, 2 * s + 11))
        opts = [*head, r(s + 11) + [s + 13], second, second, ctx + [2 * s + 11], ctx + [2 * s + 12]]
        opts.append(ctx + [2 * s + 13])
    return [with_references(schedule, o) for o in opts]


def general_options(schedule: Schedule) -> list[tuple[int, ...]]:
    """The documented general rule (module docstring) for schedules outside the table."""
    k, clips = schedule.scales_per_clip, schedule.num_clips
    image = list(range(k))
    if clips == 1:
        return [tuple(image)]
    opts = [image]
    for c in range(1, clips):
        ctx = image if c == 1 else [j * k + k - 1 for j in range(c)]
        first, largest = c * k, c * k + k - 1
        if k > 1:
            opts.append(ctx + list(range(first, largest)))
        opts.append(ctx + [largest])
    return [with_references(schedule, o) for o in opts]


def subset_options(schedule: Schedule, drop_last_scale: bool = True) -> tuple[list[tuple[int, ...]], bool]:
    """``(options, from_table)``: the original's table where it applies, else the general rule."""
    table = original_options(schedule, drop_last_scale)
    if table is not None:
        return table, True
    return general_options(schedule), False


@dataclass(frozen=True)
class ScaleSubsetSampler:
    """Draws the subset of scales of one training step.

    ``enabled=False`` always keeps every scale (the original with ``train_with_var_seq_len=0``).
    """

    enabled: bool = True
    probs: tuple[float, ...] = field(default=(40, 30, 20, 6, 3, 1, 60, 40, 12, 6, 2))
    drop_last_scale: bool = True

    def options(self, schedule: Schedule) -> tuple[list[tuple[int, ...]], list[float]]:
        """The options for ``schedule`` and their probabilities (sum 1)."""
        if not self.enabled:
            return [tuple(range(len(schedule.scales)))], [1.0]
        opts, from_table = subset_options(schedule, self.drop_last_scale)
        if not from_table:
            return opts, [1.0 / len(opts)] * len(opts)
        w = [float(p) for p in self.probs[: len(opts)]]
        if len(w) < len(opts):
            raise ValueError(
                f"var_len_probs has {len(self.probs)} weights but this schedule has {len(opts)} subset options"
            )
        total = sum(w)
        if total <= 0:
            raise ValueError(f"the first {len(opts)} var_len_probs weights are all zero: {w}")
        return opts, [v / total for v in w]

    def sample(self, schedule: Schedule, generator: torch.Generator) -> tuple[int, tuple[int, ...]]:
        """``(option index, kept scale indices)`` drawn with ``generator`` (a CPU generator)."""
        opts, probs = self.options(schedule)
        if len(opts) == 1:
            return 0, opts[0]
        i = int(torch.multinomial(torch.tensor(probs, dtype=torch.float64), 1, generator=generator).item())
        return i, opts[i]


# --------------------------------------------------------------------------------------
# The schedule of a subset
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubSchedule(Schedule):
    """The kept scales of a schedule, as a schedule the model and the loss can run on.

    Scales are renumbered ``0..n-1`` (``ref_scales`` follow), everything else (shape, frames,
    repetitions, global step counters, semantic/detail) is that of the full schedule. The RoPE
    grid stays the full schedule's: ``final_hw`` is the full schedule's largest (h, w), as in
    the original, which computes positions on the full schedule and then selects scales.
    """

    full_hw: tuple[int, int] = (0, 0)
    kept: tuple[int, ...] = ()  #: indices of the kept scales in the full schedule

    @property
    def final_hw(self) -> tuple[int, int]:
        return self.full_hw


def sub_schedule(schedule: Schedule, kept) -> SubSchedule:
    """The :class:`SubSchedule` of ``kept`` (which must hold every scale a kept scale refers to)."""
    kept = tuple(sorted(int(i) for i in kept))
    if with_references(schedule, kept) != kept:
        raise ValueError(f"scale subset {kept} misses scales its scales attend to")
    new_index = {old: new for new, old in enumerate(kept)}
    scales = []
    for new, old in enumerate(kept):
        sc = schedule.scales[old]
        scales.append(replace(sc, index=new, ref_scales=tuple(new_index[r] for r in sc.ref_scales)))
    return SubSchedule(
        tuple(scales),
        schedule.scales_per_clip,
        schedule.semantic_dim,
        schedule.detail_dim,
        full_hw=tuple(schedule.final_hw),
        kept=kept,
    )


def subset_loss_weights(
    schedule: Schedule, kept, reweight_by_scale: float = 4.0, max_reweight: float = 40.0
) -> torch.Tensor:
    """Loss weights ``[len(kept)]`` (sum 1) of the kept scales, as the original weighs them.

    ``w_s = min(max_reweight, (V_max / V_s)^(1/(1+r))) * V_s`` with V_s = t*h*w and V_max the
    largest volume of the **full** schedule (not of the subset), normalised over the kept
    scales; ``r = 0``: ``w_s = V_s`` (a plain mean over tokens).
    """
    vol = torch.tensor([float(sc.num_tokens) for sc in schedule.scales], dtype=torch.float64)
    sel = vol[list(kept)]
    if reweight_by_scale:
        w = torch.clamp((vol.max() / sel) ** (1.0 / (1.0 + reweight_by_scale)), max=max_reweight) * sel
    else:
        w = sel
    return (w / w.sum()).float()
