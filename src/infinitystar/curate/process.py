"""Curating one input: probe, scene cuts, clip filters, frame scorers and captions for one video or image.

This is what a worker process runs, so it imports no torch (only captioners and model scorers do, once built).
The result is one plain dict (the line the resume state keeps): the clips found, their scores and decisions,
and the manifest entries of the clips that were kept.

Captions: an existing caption (input manifest field, else a sidecar ``<stem>.txt``) is kept for every clip of its
file unless ``recaption``; the captioner (when given) captions the rest, one clip at a time. Frame numbers are
decode-order counts and durations are ``frames / fps``, as in the original's reader (variable-frame-rate files are
treated as constant-rate at their average rate).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from infinitystar.curate.captioner import build_captioner, clean_caption, first_sentence, sidecar_caption
from infinitystar.curate.filters import CurateConfig, Drop, check_media, check_motion, motion_measure
from infinitystar.curate.inputs import InputItem
from infinitystar.curate.scenes import (
    VideoAnalysis,
    analyze_video,
    detect_cuts,
    limit_length,
    sample_indices,
    split_scenes,
)
from infinitystar.curate.scorers import ScoreFilter, build_scorer
from infinitystar.media.decode import read_image_rgb, read_video_frames
from infinitystar.media.probe import IMAGE_SUFFIXES, VIDEO_SUFFIXES, MediaError, MediaInfo, probe_media

VIDEO_CAPTION_KEYS = ("tarsier2_caption", "caption", "long_caption", "text")
IMAGE_LONG_KEYS = ("long_caption", "caption", "tarsier2_caption", "text")


class SetupError(ValueError):
    """A scorer or captioner could not be built: the whole run stops (it is not a problem of one input)."""


class Context:
    """What a worker builds once: the resolved settings, the scorers, the captioner."""

    def __init__(self, config: CurateConfig) -> None:
        self.config = config
        try:
            self.filters: list[ScoreFilter] = [build_scorer(s) for s in config.scorers]
            self.captioner = None if config.captioner is None else build_captioner(config.captioner)
        except Exception as exc:  # a plug-in may raise anything while loading its model
            raise SetupError(f"{type(exc).__name__}: {exc}") from exc
        self.motion = motion_measure(config.motion)


def failed_result(item: InputItem, error: str | None = None) -> dict[str, Any]:
    """The result of an input that produced nothing; also the start of every result (processing fills it in)."""
    return {
        "key": item.key,
        "path": item.path,
        "kind": item.kind,
        "status": "failed",
        "error": error,
        "drop": None,
        "clips": [],
        "entries": [],
        "uncaptioned": [],
    }


def _drop_json(drop: Drop | None) -> dict | None:
    return None if drop is None else {"filter": drop.filter, "reason": drop.reason}


def _add_entry(result: dict, entry: dict, caption: str | None) -> None:
    """Uncaptioned entries go to their own manifest, so that a later run with a captioner can finish them."""
    if caption:
        result["entries"].append(entry)
    else:
        result["uncaptioned"].append({**entry, "uncaptioned": True})


def _score_clip(ctx: Context, frames: np.ndarray, kind: str) -> tuple[dict[str, float], Drop | None]:
    scores, drop = {}, None
    for f in ctx.filters:
        if not f.applies_to(kind):
            continue
        value, keep = f.evaluate(frames)
        scores[f.name] = value
        if not keep and drop is None:
            drop = Drop(f.name, f.describe(value))
    return scores, drop


def _existing_caption(item: InputItem, keys: tuple[str, ...], config: CurateConfig) -> tuple[str | None, str]:
    fields = dict(item.fields)
    for k in keys:
        if fields.get(k):
            return fields[k], "input"
    if config.sidecar_captions:
        text = sidecar_caption(item.path)
        if text:
            return text, "sidecar"
    return None, "none"


def _caption(
    ctx: Context, item: InputItem, keys: tuple[str, ...], frames: np.ndarray | None, kind: str
) -> tuple[str | None, str]:
    existing, source = _existing_caption(item, keys, ctx.config)
    if ctx.captioner is not None and (ctx.config.recaption or existing is None):
        text = clean_caption(ctx.captioner.caption(frames, kind))
        if text:
            return text, "captioner"
        return existing, source if existing else "none"
    return existing, source


# --------------------------------------------------------------------------------------------
# Videos
# --------------------------------------------------------------------------------------------


def _analyze_range(item: InputItem, ctx: Context, info: MediaInfo, result: dict) -> VideoAnalysis:
    """Decode the item's frame range once at low resolution (scene cuts, motion); a range the file does not
    have is an error, a file that decodes short of what its container promised only a warning."""
    begin = item.begin or 0
    analysis = analyze_video(
        item.path,
        info.fps,
        begin=begin,
        end=item.end,
        analysis_size=ctx.config.analysis_size,
        motion=ctx.motion,
        motion_fps=ctx.config.motion_fps,
    )
    if analysis.end <= begin:
        raise MediaError(f"{item.path}: no frames decoded from frame {begin} on (the video has fewer frames)")
    if item.end is not None and analysis.end < item.end:
        raise MediaError(f"{item.path}: the frame range ends at {item.end} but the video has {analysis.end} frames")
    if item.end is None and analysis.end < info.num_frames - max(1, info.num_frames // 20):
        # FFmpeg stops quietly at the damage in some containers: keep what decodes, but say so.
        result["warning"] = f"decoded {analysis.end} of the {info.num_frames} frames the container lists (truncated?)"
    return analysis


def _split_clips(analysis: VideoAnalysis, fps: float, begin: int, config: CurateConfig) -> tuple[list[int], list[dict]]:
    """``(cuts, clips)``: the range cut at scene changes and into windows of at most ``max_clip_duration``;
    clips too short or with too little (or too much) motion already carry their ``drop``."""
    cuts = detect_cuts(analysis, fps, config.scene_threshold, config.min_scene_duration) if config.split_scenes else []
    max_frames = math.floor(config.max_clip_duration * fps) if config.max_clip_duration else None
    clips = [{"begin": b, "end": e} for b, e in limit_length(split_scenes(begin, analysis.end, cuts), max_frames)]
    for clip in clips:
        length = (clip["end"] - clip["begin"]) / fps
        if length < config.min_duration:
            clip["drop"] = _drop_json(Drop("scene_duration", f"clip {length:.3g} s < {config.min_duration:g} s"))
            continue
        motion = analysis.clip_motion(clip["begin"], clip["end"])
        clip["motion"] = None if math.isnan(motion) else motion
        clip["drop"] = _drop_json(check_motion(motion, config))
    return cuts, clips


def _plan_samples(clips: list[dict], ctx: Context) -> dict[int, set[int]]:
    """Choose each clip's scorer (and captioner) frames; return ``{frame: {sizes}}`` so that one decoding pass
    reads them all."""
    config, captioner = ctx.config, ctx.captioner
    requests: dict[int, set[int]] = {}
    for clip in clips:
        clip["samples"] = sample_indices(clip["begin"], clip["end"], config.sample_frames)
        for i in clip["samples"]:
            requests.setdefault(i, set()).add(config.sample_size)
        if captioner is not None:
            clip["caption_samples"] = sample_indices(clip["begin"], clip["end"], captioner.num_frames)
            for i in clip["caption_samples"]:
                requests.setdefault(i, set()).add(captioner.frame_size)
    return requests


def _score_and_caption(
    ctx: Context, item: InputItem, clip: dict, frames: dict[tuple[int, int], np.ndarray]
) -> tuple[bool, str | None]:
    """``(kept, caption)`` of one clip: scored on its sampled frames, captioned only when the scorers keep it."""
    config, captioner = ctx.config, ctx.captioner
    sampled = np.stack([frames[(i, config.sample_size)] for i in clip.pop("samples")])  # [K, h, w, 3]
    clip["scores"], drop = _score_clip(ctx, sampled, "video")
    clip["drop"] = _drop_json(drop)
    caption_frames = None
    if captioner is not None:
        caption_frames = np.stack([frames[(i, captioner.frame_size)] for i in clip.pop("caption_samples")])
    if drop is not None:
        return False, None
    text, clip["caption_source"] = _caption(ctx, item, VIDEO_CAPTION_KEYS, caption_frames, "video")
    return True, text


def _video_entry(item: InputItem, clip: dict, fps: float, analysis: VideoAnalysis, text: str | None) -> dict:
    """A manifest line in the original's video format (frame range end exclusive, source fps)."""
    entry = {
        "video_path": item.path,
        "begin_frame_id": clip["begin"],
        "end_frame_id": clip["end"],
        "fps": fps,
        "width": analysis.width,
        "height": analysis.height,
        "tarsier2_caption": text or "",
    }
    fields = dict(item.fields)
    for k in ("MiniCPM_V_2_6_caption", "quality_prompt"):
        if fields.get(k):
            entry[k] = fields[k]
    return entry


def _process_video(item: InputItem, ctx: Context, result: dict) -> None:
    config = ctx.config
    info = probe_media(item.path)
    result["info"] = {"width": info.width, "height": info.height, "fps": info.fps, "frames": info.num_frames}
    begin = item.begin or 0
    duration = (item.end - begin) / info.fps if item.end is not None else info.duration - begin / info.fps
    drop = check_media(info, config, duration)
    if drop is not None:
        result.update(status="dropped", drop=_drop_json(drop))
        return
    analysis = _analyze_range(item, ctx, info, result)
    decoded = (analysis.end - begin) / info.fps
    if decoded < config.min_duration:  # the container's duration was only an estimate
        result.update(
            status="dropped", drop=_drop_json(Drop("duration", f"{decoded:.3g} s < {config.min_duration:g} s"))
        )
        return
    result["cuts"], clips = _split_clips(analysis, info.fps, begin, config)
    alive = [c for c in clips if c["drop"] is None]
    frames = read_video_frames(item.path, _plan_samples(alive, ctx))
    for clip in alive:
        kept, text = _score_and_caption(ctx, item, clip, frames)
        if kept:
            _add_entry(result, _video_entry(item, clip, info.fps, analysis, text), text)
    result["clips"] = clips
    result["status"] = "ok" if any(c["drop"] is None for c in clips) else "dropped"


# --------------------------------------------------------------------------------------------
# Images, and either
# --------------------------------------------------------------------------------------------


def _process_image(item: InputItem, ctx: Context, result: dict) -> None:
    config = ctx.config
    info = probe_media(item.path)
    result["info"] = {"width": info.width, "height": info.height}
    drop = check_media(info, config)
    if drop is not None:
        result.update(status="dropped", drop=_drop_json(drop))
        return
    sampled = read_image_rgb(item.path, config.sample_size)[None]  # [h, w, 3] -> [1, h, w, 3]
    clip: dict[str, Any] = {"begin": 0, "end": 1}
    clip["scores"], drop = _score_clip(ctx, sampled, "image")
    clip["drop"] = _drop_json(drop)
    result["clips"] = [clip]
    if drop is not None:
        result["status"] = "dropped"
        return
    frames = None
    if ctx.captioner is not None:
        frames = read_image_rgb(item.path, ctx.captioner.frame_size)[None]
    long_caption, clip["caption_source"] = _caption(ctx, item, IMAGE_LONG_KEYS, frames, "image")
    fields = dict(item.fields)
    short = fields.get("text") if clip["caption_source"] == "input" else None
    entry = {
        "image_path": item.path,
        "text": short or (first_sentence(long_caption) if long_caption else ""),
        "long_caption": long_caption or "",
        "width": info.width,
        "height": info.height,
    }
    _add_entry(result, entry, long_caption)
    result["status"] = "ok"


def process_item(item: InputItem, ctx: Context) -> dict:
    """Curate one input; never raises for a bad input (the error is in the result, status ``failed``)."""
    result = failed_result(item)
    try:
        if item.kind == "video":
            _process_video(item, ctx, result)
        elif item.kind == "image":
            _process_image(item, ctx, result)
        else:
            raise MediaError(
                f"{item.path}: unsupported file type; accepted: {', '.join(VIDEO_SUFFIXES + IMAGE_SUFFIXES)}"
            )
    except Exception as exc:  # one bad input must never stop the run
        error = str(exc) if isinstance(exc, MediaError) else f"{type(exc).__name__}: {exc}"
        result.update(status="failed", error=error, entries=[], uncaptioned=[])
    return result
