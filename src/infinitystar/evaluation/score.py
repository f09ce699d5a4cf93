"""Score a folder of generated outputs against the prompt file they were generated from.

This is the scoring half of ``infinitystar evaluate`` (the other half is
:func:`infinitystar.generation.batch.run_batch`). Every item of the prompt file
(:func:`infinitystar.generation.prompt_files.read_prompt_file`) whose output ``{name}.mp4`` / ``{name}.png`` exists
is scored; items without an output are listed, not fatal, so a half-finished batch can be scored while it runs and
scored again when it is done.

Per item (``scores.jsonl``, one line per scored item):

- ``flicker``: VBench's temporal flickering, ``(255 - mean |frame[t+1] - frame[t]|) / 255`` (videos only);
- ``smoothness``: the motion-smoothness proxy of :mod:`infinitystar.evaluation.metrics` (videos of 3+ frames);
- ``world``: for prompts that follow the procedural world's grammar (:func:`infinitystar.world.captions.parse_caption`),
  the analytic prompt-following check of :mod:`infinitystar.world.evaluate` (colour, shape, motion, background), with
  the prompt's split (``train`` / ``heldout`` by its colour-shape-motion combination, ``image`` for image prompts);
- ``clip``: CLIP score with a local CLIP folder (``100 * max(cos, 0)`` averaged over frames);
- ``first_frame_psnr``: for image-to-video items, PSNR of the first frame against the item's image, prepared exactly
  as the pipeline prepares it (cover-resize and centre crop to the output's size); capped at
  :data:`PSNR_CAP` dB so that identical frames stay a finite JSON number.

Over the set: FVD with a local I3D against real videos (:mod:`infinitystar.evaluation.fvd`). Rows are appended to
``scores.partial.jsonl`` as they are computed and reused on the next run while their output is unchanged
(:mod:`infinitystar.evaluation.files`); the summary and final files are :mod:`infinitystar.evaluation.summary`'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from infinitystar.devices import resolve_device
from infinitystar.evaluation.files import (
    find_output,
    is_reusable,
    output_signature,
    read_frames,
    read_rows,
    reference_frame,
    reference_signature,
)
from infinitystar.evaluation.fvd import FVDAccumulator, load_clip
from infinitystar.evaluation.metrics import motion_smoothness_proxy, temporal_flickering
from infinitystar.evaluation.summary import PARTIAL_FILE, SCORES_FILE, EvalReport, summarize
from infinitystar.generation.prompt_files import PromptItem

__all__ = [
    "DEFAULT_METRICS",
    "ITEM_METRICS",
    "METRICS",
    "PSNR_CAP",
    "parse_metrics",
    "score_frames",
    "score_outputs",
]

METRICS: tuple[str, ...] = ("flicker", "smoothness", "world", "clip", "fvd")
#: metrics that need no model weights: on unless ``--metrics`` says otherwise
DEFAULT_METRICS: tuple[str, ...] = ("flicker", "smoothness", "world")
#: per-item metrics (FVD is a set-level metric)
ITEM_METRICS: tuple[str, ...] = ("flicker", "smoothness", "world", "clip")
PSNR_CAP = 100.0


def parse_metrics(
    text: str | Sequence[str] | None, *, clip_model: str | None = None, fvd_ready: bool = False
) -> tuple[str, ...]:
    """The metrics to compute, validated against the local weights given.

    ``None`` gives :data:`DEFAULT_METRICS`, plus ``clip`` when a CLIP folder is given and ``fvd`` when an I3D and
    real videos are. An explicit list is taken as it is: ``clip`` then needs ``clip_model`` and ``fvd`` needs
    ``fvd_ready``, and weights given for a metric that is not listed are an error rather than silently unused.
    """
    if text is None:
        chosen = list(DEFAULT_METRICS) + (["clip"] if clip_model else []) + (["fvd"] if fvd_ready else [])
        return tuple(chosen)
    names = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"--metrics is empty; accepted: a comma-separated list of {', '.join(METRICS)}")
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; accepted: {', '.join(METRICS)}")
    if "clip" in names and not clip_model:
        raise ValueError("metric 'clip' needs --clip-model LOCAL_DIR (a CLIPModel folder; nothing is downloaded)")
    if "fvd" in names and not fvd_ready:
        raise ValueError("metric 'fvd' needs --i3d LOCAL_FILE (a TorchScript I3D) and --real-videos DIR")
    if clip_model and "clip" not in names:
        raise ValueError("--clip-model is given but --metrics does not list 'clip'; add it or drop --clip-model")
    if fvd_ready and "fvd" not in names:
        raise ValueError("--i3d / --real-videos are given but --metrics does not list 'fvd'; add it or drop them")
    return tuple(dict.fromkeys(names))  # de-duplicated, in the given order


# --------------------------------------------------------------------------------------------
# One item
# --------------------------------------------------------------------------------------------


def _world_split(parsed) -> str:
    """``train``, ``heldout`` or ``image``; prompts of a new colour (pink) get their own: ``pink-heldout``, ..."""
    from infinitystar.world.scenes import NEW_COLORS, is_held_out

    prefix = f"{parsed.color}-" if parsed.color in NEW_COLORS else ""
    if parsed.motion is None:
        return prefix + "image"
    return prefix + ("heldout" if is_held_out((parsed.color, parsed.shape, parsed.motion)) else "train")


def _parse_world(prompt: str):
    from infinitystar.world.captions import parse_caption

    try:
        return parse_caption(prompt)
    except ValueError:
        return None


def _world_scores(frames: np.ndarray, prompt: str, parsed) -> dict:
    """The ``world`` entry of a row: the split, which attributes the video got right, and what was detected."""
    from infinitystar.world.evaluate import evaluate_video

    report = evaluate_video(frames, prompt)
    a = report.analysis
    return {
        "split": _world_split(parsed),
        "color": report.color_correct,
        "shape": report.shape_correct,
        "motion": report.motion_correct,
        "background": report.background_correct,
        "all": report.all_correct,
        "detected": {"color": a.color, "shape": a.shape, "motion": a.motion, "background": a.background},
    }


def score_frames(
    frames: np.ndarray,
    item: PromptItem,
    metrics: Sequence[str],
    *,
    clip_scorer=None,
) -> dict:
    """Per-item scores of uint8 ``frames [T, H, W, 3]`` for ``item`` (metrics that do not apply are left out)."""
    row: dict[str, Any] = {}
    t = frames.shape[0]
    if "flicker" in metrics and t >= 2:
        row["flicker"] = temporal_flickering(frames)
    if "smoothness" in metrics and t >= 3:
        row["smoothness"] = motion_smoothness_proxy(frames)
    if "world" in metrics:
        parsed = _parse_world(item.prompt)
        if parsed is not None:
            row["world"] = _world_scores(frames, item.prompt, parsed)
    if "clip" in metrics:
        if clip_scorer is None:
            raise ValueError("metric 'clip' needs a loaded CLIPScorer")
        row["clip"] = clip_scorer.score(frames, item.prompt)
    if item.image:
        from infinitystar.world.analysis import psnr

        reference = reference_frame(item.image, frames.shape[1:3])
        row["first_frame_psnr"] = min(psnr(frames[:1], reference), PSNR_CAP)
    return row


# --------------------------------------------------------------------------------------------
# A folder
# --------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """What every item of one scoring run shares: the metrics, the loaded models, the report and the partial log."""

    metrics: Sequence[str]
    clip_scorer: Any
    clip_id: str | None
    fvd: FVDAccumulator | None
    report: EvalReport
    partial: TextIO
    log: Callable[[str], None]

    @property
    def wanted(self) -> list[str]:
        """The requested per-item metrics (what a row must hold to be reused)."""
        return [x for x in self.metrics if x in ITEM_METRICS]


def score_outputs(
    items: Sequence[PromptItem],
    out_dir: str | Path,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    clip_model: str | Path | None = None,
    i3d: str | Path | None = None,
    real_videos: str | Path | None = None,
    fvd_frames: int = 16,
    i3d_resolution: int = 224,
    device: str | None = None,
    rescore: bool = False,
    log: Callable[[str], None] | None = None,
) -> EvalReport:
    """Score every item of ``items`` that has an output in ``out_dir``; see the module docstring for the metrics.

    ``clip_model``: a local CLIPModel folder (needed for ``clip``). ``i3d`` (a TorchScript I3D file) and
    ``real_videos`` (a folder of videos, searched recursively) are needed for ``fvd``, computed on the first
    ``fvd_frames`` frames of every clip that has that many. ``rescore``: ignore rows of earlier runs.
    """
    out_dir = _check_folder(items, out_dir, metrics)
    device = str(resolve_device(device))
    clip_scorer, clip_id = _clip(metrics, clip_model, device)
    fvd = _fvd(metrics, i3d, real_videos, fvd_frames, i3d_resolution, device, out_dir)
    partial = out_dir / PARTIAL_FILE
    earlier = {} if rescore else {**read_rows(out_dir / SCORES_FILE), **read_rows(partial)}
    report = EvalReport(rows=[])
    with open(partial, "a" if not rescore else "w", encoding="utf-8") as partial_f:
        run = _Run(metrics, clip_scorer, clip_id, fvd, report, partial_f, log or (lambda msg: None))
        for item in items:
            path = find_output(out_dir, item)
            if path is None:
                report.missing.append(item.name)
            else:
                _score_item(run, item, path, earlier.get(item.name))
    report.summary = summarize(report, metrics, fvd=fvd.result() if fvd is not None else None)
    return report


def _check_folder(items: Sequence[PromptItem], out_dir: str | Path, metrics: Sequence[str]) -> Path:
    """The output folder, after checking that there is something to score with known metrics."""
    unknown = [x for x in metrics if x not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; accepted: {', '.join(METRICS)}")
    if not items:
        raise ValueError("nothing to score: the prompt file has no items")
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ValueError(f"output folder not found: {out_dir}")
    return out_dir


def _clip(metrics: Sequence[str], clip_model: str | Path | None, device: str) -> tuple[Any, str | None]:
    """(the CLIP scorer, the folder that identifies its scores), or (None, None) when ``clip`` is not requested."""
    if "clip" not in metrics:
        return None, None
    if clip_model is None:
        raise ValueError("metric 'clip' needs clip_model, a local CLIPModel folder")
    return load_clip(clip_model, device), str(Path(clip_model).resolve())


def _fvd(metrics, i3d, real_videos, fvd_frames: int, resolution: int, device: str, out_dir: Path):
    """The FVD accumulator, or None when ``fvd`` is not requested."""
    if "fvd" not in metrics:
        return None
    if i3d is None or real_videos is None:
        raise ValueError("metric 'fvd' needs i3d (a TorchScript I3D file) and real_videos (a folder of videos)")
    if fvd_frames < 1:
        raise ValueError(f"fvd_frames must be >= 1, got {fvd_frames}")
    return FVDAccumulator(i3d, real_videos, fvd_frames, resolution, device, out_dir)


def _score_item(run: _Run, item: PromptItem, path: Path, old: dict | None) -> None:
    """Score one output into ``run.report``, reusing ``old`` when it still holds; frames are decoded only when a
    metric or FVD needs them. An unreadable output is recorded, not raised, so one bad file never stops a run."""
    signature = output_signature(path)
    reusable = is_reusable(old, item, signature, run.wanted, run.clip_id)
    frames = None
    if run.fvd is not None or not reusable:
        try:
            frames = read_frames(path)
        except ValueError as exc:
            run.report.unreadable[item.name] = str(exc)
            run.log(f"unreadable {path.name}: {exc}")
            return
    if reusable:
        row = old
        run.report.reused += 1
    else:
        row = _new_row(run, item, path, signature, frames)
        if row is None:
            return
    run.report.rows.append(row)
    if run.fvd is not None and frames is not None:
        run.fvd.add_generated(frames)


def _new_row(run: _Run, item: PromptItem, path: Path, signature: dict, frames: np.ndarray) -> dict | None:
    """Compute one item's row and append it to the partial log (None, recorded as unreadable, when it cannot be
    scored, e.g. its reference image is unreadable)."""
    try:
        scores = score_frames(frames, item, run.metrics, clip_scorer=run.clip_scorer)
    except ValueError as exc:  # e.g. an unreadable reference image
        run.report.unreadable[item.name] = str(exc)
        run.log(f"cannot score {path.name}: {exc}")
        return None
    t, h, w = frames.shape[:3]
    row = {
        "name": item.name,
        "prompt": item.prompt,
        "seed": item.seed,
        "sample": item.sample,
        "image": item.image,
        "reference": reference_signature(item),
        "output": signature,
        "frames": t,
        "height": h,
        "width": w,
        "computed": run.wanted,
        **({"clip_model": run.clip_id} if run.clip_id else {}),
        **scores,
    }
    run.partial.write(json.dumps(row) + "\n")
    run.partial.flush()
    run.log(f"scored {path.name}")
    return row
