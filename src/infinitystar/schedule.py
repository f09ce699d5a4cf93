"""Scale schedules of the spacetime pyramid: pure functions and plain data.

Everything that depends on the schedule (which scales exist, how often each one is repeated,
which head and quantizer width it uses, which earlier scale it attends to, which latent frames
it covers) is computed here once and handed to the tokenizer, the transformer and the
generation loop as a :class:`Schedule`. No other module re-derives these facts.

Vocabulary
- A *scale* is a latent block of ``(pt, ph, pw)`` tokens; ``pt`` latent frames of a clip.
- A *clip* is one pyramid: clip 0 is the image pyramid (``pt = 1``, the first latent frame);
  every later clip covers ``frames_per_clip`` latent frames (20 = 5 s in the released model),
  the last one possibly shorter, and repeats the same spatial sizes.
- A *step* is one (scale, repetition): each scale is predicted ``r`` times in a row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# --------------------------------------------------------------------------------------
# The schedule as data
# --------------------------------------------------------------------------------------
from infinitystar.sizes import SPATIAL_COMPRESSION, TEMPORAL_COMPRESSION, spatial_scales


@dataclass(frozen=True)
class Scale:
    """One scale of the schedule (all fields are plain data)."""

    index: int  #: position in the schedule
    shape: tuple[int, int, int]  #: (pt, ph, pw) tokens
    clip: int  #: 0 = image pyramid, c >= 1 = video clip c
    index_in_clip: int  #: position inside its pyramid
    frame_start: int  #: first latent frame covered (absolute)
    frame_end: int  #: one past the last latent frame covered
    repetitions: int  #: how many steps predict this scale
    first_step: int  #: global step counter of its first repetition
    semantic: bool  #: 16-bit semantic (True) or 64-bit detail (False) bits
    ref_scales: tuple[int, ...]  #: earlier scales it attends to besides itself and the text

    @property
    def num_tokens(self) -> int:
        pt, ph, pw = self.shape
        return pt * ph * pw

    @property
    def last_step(self) -> int:
        return self.first_step + self.repetitions - 1


@dataclass(frozen=True)
class Step:
    """One autoregressive step: a (scale, repetition) pair with its global counter."""

    index: int  #: global step counter (the RoPE scale-axis position is 512 + index)
    scale: int
    repetition: int
    is_last_repetition: bool


@dataclass(frozen=True)
class Schedule:
    """A whole spacetime schedule: scales, clips, repetitions, attention references.

    Build it with :func:`build_schedule` (named templates) or :func:`schedule_from_scales`
    (any list of scales, as the parity dumps use).
    """

    scales: tuple[Scale, ...]
    scales_per_clip: int  #: K, the number of scales of one pyramid
    semantic_dim: int = 16
    detail_dim: int = 64
    steps: tuple[Step, ...] = field(init=False)

    def __post_init__(self) -> None:
        steps = []
        for sc in self.scales:
            for r in range(sc.repetitions):
                steps.append(Step(sc.first_step + r, sc.index, r, r == sc.repetitions - 1))
        object.__setattr__(self, "steps", tuple(steps))

    # -- shapes ---------------------------------------------------------------------------
    @property
    def num_clips(self) -> int:
        return self.scales[-1].clip + 1

    @property
    def final_hw(self) -> tuple[int, int]:
        """Latent (h, w) of the full-size scale (the last one)."""
        _, h, w = self.scales[-1].shape
        return h, w

    @property
    def num_latent_frames(self) -> int:
        return self.scales[-1].frame_end

    @property
    def num_frames(self) -> int:
        """Video frames the schedule decodes to (1 + 4 (t - 1))."""
        return 1 + TEMPORAL_COMPRESSION * (self.num_latent_frames - 1)

    @property
    def pixel_hw(self) -> tuple[int, int]:
        h, w = self.final_hw
        return h * SPATIAL_COMPRESSION, w * SPATIAL_COMPRESSION

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    def bits(self, scale: int) -> int:
        """Bits per token at a scale: 16 (semantic) or 64 (detail)."""
        return self.semantic_dim if self.scales[scale].semantic else self.detail_dim

    def clip_scales(self, clip: int) -> tuple[Scale, ...]:
        return tuple(s for s in self.scales if s.clip == clip)

    def clip_shape(self, clip: int) -> tuple[int, int, int]:
        """(pt, h, w) of the full-size latent of a clip, where its running sum lives."""
        last = self.clip_scales(clip)[-1]
        return last.shape

    def truncate_clips(self, num_clips: int) -> Schedule:
        """The schedule of the first ``num_clips`` clips (e.g. 1 = the image pyramid alone)."""
        if not 1 <= num_clips <= self.num_clips:
            raise ValueError(f"num_clips must be in 1..{self.num_clips}, got {num_clips}")
        kept = tuple(s for s in self.scales if s.clip < num_clips)
        return Schedule(kept, self.scales_per_clip, self.semantic_dim, self.detail_dim)

    def last_user(self, scale: int) -> int:
        """Index of the last scale that attends to ``scale`` (-1 if none): when its KV can be freed."""
        users = [s.index for s in self.scales if scale in s.ref_scales]
        return max(users) if users else -1

    def num_visual_tokens(self) -> int:
        """Visual tokens of one training pack (one repetition per scale)."""
        return sum(s.num_tokens for s in self.scales)

    def num_step_tokens(self) -> int:
        """Visual tokens processed over all inference steps."""
        return sum(s.num_tokens * s.repetitions for s in self.scales)


def _parse_repetitions(reps: Sequence[int] | str | None, k: int, what: str) -> list[int]:
    if reps is None:
        return [1] * k
    if isinstance(reps, str):  # the original passes JSON-ish strings such as "[3]*12+[2,1]"
        text = reps.strip()
        if not all(ch in "0123456789[]*+, " for ch in text):
            raise ValueError(f"{what} must be a list of integers, got {reps!r}")
        reps = eval(text, {"__builtins__": {}}, {})  # noqa: S307 - only digits and list operators
    reps = [int(r) for r in reps]
    if len(reps) < k or any(r < 1 for r in reps):
        raise ValueError(f"{what} needs at least {k} positive integers (one per scale), got {reps}")
    return reps[:k]


def schedule_from_scales(
    scale_shapes: Sequence[Sequence[int]],
    scales_per_clip: int,
    *,
    image_repetition: Sequence[int] | str | None = None,
    video_repetition: Sequence[int] | str | None = None,
    detail_scale_min_tokens: int = 350,
    semantic_dim: int = 16,
    detail_dim: int = 64,
    clip_frame_starts: Sequence[int] | None = None,
) -> Schedule:
    """A schedule from explicit scales: clip 0 is the first ``scales_per_clip`` scales (pt = 1),
    every further group of ``scales_per_clip`` scales is a video clip.

    A scale is semantic when ``ph * pw < detail_scale_min_tokens``. Clip ``c >= 1`` starts at
    latent frame ``1 + sum(pt of the earlier video clips)`` unless ``clip_frame_starts`` says
    otherwise, and each of its scales attends to the last scale of clip ``c - 1``.
    """
    shapes = [tuple(int(v) for v in s) for s in scale_shapes]
    k = int(scales_per_clip)
    _check_pyramids(shapes, k)
    image_rep = _parse_repetitions(image_repetition, k, "image_repetition")
    video_rep = _parse_repetitions(video_repetition, k, "video_repetition")
    starts = _clip_frame_starts(shapes, k, clip_frame_starts)
    scales = []
    step = 0
    for i, shape in enumerate(shapes):
        clip, j = divmod(i, k)
        reps = image_rep[j] if clip == 0 else video_rep[j]
        refs = (clip * k - 1,) if clip >= 1 else ()
        scales.append(
            Scale(
                index=i,
                shape=shape,
                clip=clip,
                index_in_clip=j,
                frame_start=starts[clip],
                frame_end=starts[clip] + shape[0],
                repetitions=reps,
                first_step=step,
                semantic=shape[1] * shape[2] < detail_scale_min_tokens,
                ref_scales=refs,
            )
        )
        step += reps
    return Schedule(tuple(scales), k, semantic_dim, detail_dim)


def _check_pyramids(shapes: list[tuple[int, ...]], k: int) -> None:
    """Scales ``(pt, ph, pw)`` must split into pyramids of ``k`` scales: the first (the image) with ``pt = 1``,
    each with one ``pt`` and ending at its largest size (where the running sum of the clip lives)."""
    if k < 1 or not shapes or len(shapes) % k:
        raise ValueError(f"{len(shapes)} scales do not split into pyramids of {k} scales")
    if any(len(s) != 3 or min(s) < 1 for s in shapes):
        raise ValueError(f"every scale must be (pt, ph, pw) with positive sizes, got {shapes}")
    if any(s[0] != 1 for s in shapes[:k]):
        raise ValueError("the image pyramid (the first scales_per_clip scales) must have pt = 1")
    for c in range(len(shapes) // k):
        clip = shapes[c * k : (c + 1) * k]
        pts = {s[0] for s in clip}
        if len(pts) != 1:
            raise ValueError(f"all scales of clip {c} must have the same pt, got {sorted(pts)}")
        if any(s[1] > clip[-1][1] or s[2] > clip[-1][2] for s in clip):
            raise ValueError(f"clip {c}: its last scale must be the largest, got {clip}")


def _clip_frame_starts(shapes: list[tuple[int, ...]], k: int, given: Sequence[int] | None) -> list[int]:
    """First latent frame of every clip: ``given``, else the image at 0 and each clip after the previous one."""
    num_clips = len(shapes) // k
    if given is not None:
        starts = [int(v) for v in given]
        if len(starts) != num_clips:
            raise ValueError(f"clip_frame_starts needs {num_clips} entries, got {len(starts)}")
        return starts
    starts = [0]
    for c in range(1, num_clips):
        starts.append(starts[-1] + shapes[(c - 1) * k][0])
    return starts


@dataclass(frozen=True)
class ScheduleSpec:
    """Named settings of a released schedule (the 480p and 720p models)."""

    pn: str
    image_repetition: tuple[int, ...]
    video_repetition: tuple[int, ...]
    detail_scale_min_tokens: int
    frames_per_clip: int = 20


SCHEDULE_SPECS: dict[str, ScheduleSpec] = {
    "480p": ScheduleSpec("0.40M", (3,) * 14, (3,) * 12 + (2, 1), 350),
    "720p": ScheduleSpec("0.90M", (3,) * 15, (3,) * 12 + (2, 1, 1), 750),
}


def build_schedule(
    h_div_w: float,
    pn: str,
    num_latent_frames: int,
    *,
    image_repetition: Sequence[int] | str | None = None,
    video_repetition: Sequence[int] | str | None = None,
    detail_scale_min_tokens: int | None = None,
    frames_per_clip: int = 20,
) -> Schedule:
    """The original's spacetime schedule for an aspect ratio, a budget and a latent length.

    ``pn`` is a budget ('0.06M', '0.25M', '0.40M', '0.90M') or '480p'/'720p', which also
    supply the released repetitions and semantic/detail threshold. The first latent frame gets
    the image pyramid; the rest is cut into clips of ``frames_per_clip`` latent frames, the last
    one shorter if needed. ``num_latent_frames = 1`` gives an image schedule.
    """
    spec = SCHEDULE_SPECS.get(pn)
    hws = spatial_scales(h_div_w, pn)
    if spec is not None:
        image_repetition = spec.image_repetition if image_repetition is None else image_repetition
        video_repetition = spec.video_repetition if video_repetition is None else video_repetition
        if detail_scale_min_tokens is None:
            detail_scale_min_tokens = spec.detail_scale_min_tokens
    if detail_scale_min_tokens is None:
        raise ValueError(f"detail_scale_min_tokens is required for budget {pn!r}")
    return pyramid_schedule(
        hws,
        num_latent_frames,
        image_repetition=image_repetition,
        video_repetition=video_repetition,
        detail_scale_min_tokens=detail_scale_min_tokens,
        frames_per_clip=frames_per_clip,
    )


def pyramid_schedule(
    sizes: Sequence[tuple[int, int]],
    num_latent_frames: int,
    *,
    image_repetition: Sequence[int] | str | None = None,
    video_repetition: Sequence[int] | str | None = None,
    detail_scale_min_tokens: int = 350,
    frames_per_clip: int = 20,
    semantic_dim: int = 16,
    detail_dim: int = 64,
) -> Schedule:
    """The spacetime pyramid over one list of spatial ``sizes`` (ph, pw): the image pyramid on the
    first latent frame, then clips of ``frames_per_clip`` latent frames (the last one shorter if
    needed), each repeating the same sizes. ``semantic_dim`` / ``detail_dim``: bits per token of the
    two kinds of scales (the model's)."""
    if num_latent_frames < 1:
        raise ValueError(f"num_latent_frames must be >= 1, got {num_latent_frames}")
    if frames_per_clip < 1:
        raise ValueError(f"frames_per_clip must be >= 1, got {frames_per_clip}")
    rest = num_latent_frames - 1
    clip_pts = [frames_per_clip] * (rest // frames_per_clip)
    if rest % frames_per_clip:
        clip_pts.append(rest % frames_per_clip)
    shapes = [(1, h, w) for h, w in sizes]
    for pt in clip_pts:
        shapes += [(pt, h, w) for h, w in sizes]
    return schedule_from_scales(
        shapes,
        len(sizes),
        image_repetition=image_repetition,
        video_repetition=video_repetition,
        detail_scale_min_tokens=detail_scale_min_tokens,
        semantic_dim=semantic_dim,
        detail_dim=detail_dim,
    )


def schedule_from_original_config(config: dict) -> Schedule:
    """Rebuild the schedule of an original run from its settings (a parity dump's config.json).

    Reads ``scale_schedule``, ``first_full_spatial_size_scale_index``, the repetitions and the
    semantic/detail threshold from ``args``/``preset_config``; frame ranges come from
    ``context_info`` when present (the original's own record of them).
    """
    args = config.get("args", {})
    preset = config.get("preset_config", {})
    k = int(config["first_full_spatial_size_scale_index"]) + 1
    shapes = config["scale_schedule"]
    starts = None
    info = config.get("context_info")
    if info:
        starts = [int(info[str(c * k)]["frame_ss"]) for c in range(len(shapes) // k)]
    sched = schedule_from_scales(
        shapes,
        k,
        image_repetition=preset.get("image_scale_repetition", args.get("image_scale_repetition")),
        video_repetition=preset.get("video_scale_repetition", args.get("video_scale_repetition")),
        detail_scale_min_tokens=int(preset.get("detail_scale_min_tokens", args.get("detail_scale_min_tokens"))),
        semantic_dim=int(args.get("semantic_scale_dim", 16)),
        detail_dim=int(args.get("detail_scale_dim", 64)),
        clip_frame_starts=starts,
    )
    return sched


def rope_grid_ids(size: int, final_size: int) -> list[int]:
    """Height or width RoPE ids of a coarse scale stretched onto the final grid.

    ``round(arange(size) * (final_size / size))`` in float32 with round-half-to-even, as the
    original computes it (matters for non-square sizes).
    """
    ratio = np.float32(final_size / size)
    return [int(v) for v in np.round(np.arange(size, dtype=np.float32) * ratio)]
