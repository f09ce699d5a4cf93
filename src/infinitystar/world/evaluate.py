"""Scoring generated world videos against their captions: one report per video and a summary over many.

:mod:`infinitystar.world.analysis` says what a video shows (background, colour, shape, motion) without looking at any
prompt; this module parses each prompt with the world's grammar (:func:`infinitystar.world.captions.parse_caption`)
and turns the comparison into correct flags. Averaged over many prompts, these flags are the prompt-following
accuracy of a model trained on the world; over held-out prompts, its compositional generalisation.

Why a module of its own: the analysis is a measurement and needs no captions; the report is a policy (which fields
count towards ``all_correct``, what counts as found, how flags are averaged) that the CLI, ``infinitystar evaluate``,
the benchmarks and the recipes share, and it can change without touching the measurement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from infinitystar.world.analysis import Analysis, EvalConfig, _analyze_frames, _psnr, to_frames
from infinitystar.world.captions import ParsedCaption, parse_caption

__all__ = ["EvalSummary", "VideoReport", "evaluate", "evaluate_video"]


@dataclass
class VideoReport:
    """One video against its prompt: what was found, and a correct flag per field.

    ``color_found``: the named colour is present (as an object) in enough frames. ``motion_correct`` is ``None`` for
    an image prompt. ``all_correct`` needs colour, shape and (for videos) motion; the background is reported but not
    part of it. ``first_frame_psnr`` is set when a reference image was given (image-to-video).
    """

    prompt: str
    expected: ParsedCaption
    analysis: Analysis
    color_found: bool
    color_correct: bool
    shape_correct: bool
    motion_correct: bool | None
    background_correct: bool
    all_correct: bool
    first_frame_psnr: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["analysis"].pop("track")
        return d


def evaluate_video(video, prompt: str, *, reference=None, config: EvalConfig | None = None) -> VideoReport:
    """Score one generated video (or image) against its world caption.

    ``prompt`` must follow the world grammar (:func:`infinitystar.world.captions.parse_caption`; a ``<<<t=Ns>>>``
    tag is allowed). A video prompt evaluated on a single frame cannot show motion, so its motion is wrong.
    ``reference`` (an image) adds the PSNR of the first frame to it.
    """
    config = config or EvalConfig()
    expected = parse_caption(prompt)
    frames = to_frames(video)
    analysis = _analyze_frames(frames, expected.color, config)
    found = analysis.tracked_color == expected.color and analysis.present_frames >= max(
        1, math.ceil(config.min_present * analysis.frames)
    )
    color_ok = analysis.color == expected.color
    shape_ok = analysis.shape == expected.shape
    motion_ok = None if expected.motion is None else analysis.motion == expected.motion
    first_psnr = None
    if reference is not None:
        first_psnr = _psnr(frames[:1], to_frames(reference, "reference")[:1], "first frame")
    return VideoReport(
        prompt=prompt,
        expected=expected,
        analysis=analysis,
        color_found=found,
        color_correct=color_ok,
        shape_correct=shape_ok,
        motion_correct=motion_ok,
        background_correct=analysis.background == expected.background,
        all_correct=color_ok and shape_ok and motion_ok is not False,
        first_frame_psnr=first_psnr,
    )


@dataclass
class EvalSummary:
    """Prompt-following accuracy over a list of videos (fractions in [0, 1]).

    ``motion`` averages over video prompts only (``None`` if there were none); ``first_frame_psnr`` is the mean over
    the videos that had a reference (``None`` if none had one).
    """

    n: int
    color: float
    shape: float
    motion: float | None
    all: float
    background: float
    first_frame_psnr: float | None
    reports: list[VideoReport] = field(repr=False)

    def to_dict(self, with_reports: bool = False) -> dict:
        d = {k: getattr(self, k) for k in ("n", "color", "shape", "motion", "all", "background", "first_frame_psnr")}
        if with_reports:
            d["reports"] = [r.to_dict() for r in self.reports]
        return d

    def __str__(self) -> str:
        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{100 * v:.1f}%"

        psnr_text = "n/a" if self.first_frame_psnr is None else f"{self.first_frame_psnr:.2f} dB"
        return (
            f"{self.n} videos: color {pct(self.color)}, shape {pct(self.shape)}, motion {pct(self.motion)}, "
            f"all {pct(self.all)}, background {pct(self.background)}, first-frame PSNR {psnr_text}"
        )


def evaluate(
    videos: Sequence, prompts: Sequence[str], *, references: Sequence | None = None, config: EvalConfig | None = None
) -> EvalSummary:
    """Evaluate ``videos[i]`` against ``prompts[i]`` (and ``references[i]``, an image or ``None``) and aggregate."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of str, one per video (wrap a single prompt in a list)")
    if len(videos) != len(prompts):
        raise ValueError(f"got {len(videos)} videos but {len(prompts)} prompts; give one prompt per video")
    if references is not None and len(references) != len(videos):
        raise ValueError(f"got {len(references)} references for {len(videos)} videos; give one (or None) per video")
    if not len(videos):
        raise ValueError("nothing to evaluate: the list of videos is empty")
    refs = references if references is not None else [None] * len(videos)
    reports = [evaluate_video(v, p, reference=r, config=config) for v, p, r in zip(videos, prompts, refs)]

    def mean(flags: list) -> float | None:
        return sum(flags) / len(flags) if flags else None

    psnrs = [r.first_frame_psnr for r in reports if r.first_frame_psnr is not None]
    return EvalSummary(
        n=len(reports),
        color=mean([r.color_correct for r in reports]),
        shape=mean([r.shape_correct for r in reports]),
        motion=mean([r.motion_correct for r in reports if r.motion_correct is not None]),
        all=mean([r.all_correct for r in reports]),
        background=mean([r.background_correct for r in reports]),
        first_frame_psnr=(sum(psnrs) / len(psnrs)) if psnrs else None,
        reports=reports,
    )
