"""The curation run: inputs -> probe -> scenes -> filters -> scorers -> captions -> training manifest.

Output files, for ``--out data/train.jsonl``:

- ``data/train.jsonl``: the training manifest in the original's jsonl format, one line per kept clip or image,
  sorted by file and first frame (so the same inputs give the same file, whatever the number of workers):

  - video clip: ``video_path``, ``begin_frame_id``, ``end_frame_id`` (source frames, end exclusive: the clip
    is ``end - begin`` frames long), ``fps`` (source), ``width``, ``height``, ``tarsier2_caption``, plus
    ``MiniCPM_V_2_6_caption`` / ``quality_prompt`` when the input manifest had them;
  - image: ``image_path``, ``text`` (short caption), ``long_caption``, ``width``, ``height``.

- ``data/train.uncaptioned.jsonl``: kept items that have no caption (no captioner, no sidecar ``.txt``, none in
  the input manifest), in the same format with empty captions and ``"uncaptioned": true``. Curating this file
  again with ``--captioner`` captions them (frame ranges from an input manifest are honoured).
- ``data/train.report.json``: counts per filter (what was dropped and why, with examples), failures, captions.
- ``data/train.state.jsonl``: the progress log. Its first line holds the settings; then one line per finished
  input (its clips, scores and decisions), appended and fsynced as soon as the input is done, so an interrupted
  run loses nothing: ``--resume`` skips every input already in it and rebuilds the outputs. The manifest and
  report are rewritten atomically from the log at the end of every run.

Captions: an existing caption (input manifest field, else a sidecar ``<stem>.txt``) is kept for every clip of its
file unless ``recaption``; the captioner (when given) captions the rest, one clip at a time. Frame numbers are
decode-order counts and durations are ``frames / fps``, as in the original's reader (variable-frame-rate files are
treated as constant-rate at their average rate).

Work is spread over processes (multiprocessing ``spawn``); a corrupt input is recorded as failed with its error
and the run goes on; a worker that dies (a decoder crash, out of memory) is replaced and the inputs it had are
retried one at a time, so the culprit alone is marked failed.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import tempfile
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .captioner import build_captioner, check_captioner_spec, clean_caption, first_sentence, sidecar_caption
from .filters import CurateConfig, Drop, check_media, check_motion, motion_measure
from .probe import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    MediaError,
    media_kind,
    probe_media,
    read_image_rgb,
    read_video_frames,
)
from .scenes import analyze_video, detect_cuts, limit_length, sample_indices, split_scenes
from .scorers import ScoreFilter, build_scorer, check_scorer_specs

STATE_VERSION = 1
MANIFEST_PATH_KEYS = ("path", "video_path", "image_path", "file")
# Caption-like fields carried over from an input manifest (the original's names plus a generic "caption").
CAPTION_FIELDS = ("tarsier2_caption", "MiniCPM_V_2_6_caption", "quality_prompt", "caption", "text", "long_caption")
VIDEO_CAPTION_KEYS = ("tarsier2_caption", "caption", "long_caption", "text")
IMAGE_LONG_KEYS = ("long_caption", "caption", "tarsier2_caption", "text")


class SetupError(ValueError):
    """A scorer or captioner could not be built: the whole run stops (it is not a problem of one input)."""


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputItem:
    """One thing to curate: a media file, optionally a frame range of it, and caption fields from a manifest."""

    path: str
    kind: str  # "video", "image", or "unknown" (reported as failed)
    begin: int | None = None
    end: int | None = None
    fields: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        """Unique id in the resume state and the sort key of the outputs."""
        if self.begin is None and self.end is None:
            return self.path
        return f"{self.path}#{self.begin or 0}-{'' if self.end is None else self.end}"


def _item_from_line(obj: Any, base: Path, where: str) -> InputItem:
    if isinstance(obj, str):
        obj = {"path": obj}
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object or a path string; got {type(obj).__name__}")
    keys = [k for k in MANIFEST_PATH_KEYS if isinstance(obj.get(k), str) and obj[k].strip()]
    if not keys:
        raise ValueError(f"{where}: no media path; give one of {', '.join(MANIFEST_PATH_KEYS)}")
    path = Path(obj[keys[0]]).expanduser()
    path = path if path.is_absolute() else base / path
    kind = {"video_path": "video", "image_path": "image"}.get(keys[0]) or media_kind(path) or "unknown"
    begin, end = obj.get("begin_frame_id"), obj.get("end_frame_id")
    for name, value in (("begin_frame_id", begin), ("end_frame_id", end)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{where}: {name} must be a non-negative integer; got {value!r}")
    if begin is not None and end is not None and end <= begin:
        raise ValueError(f"{where}: end_frame_id ({end}) must be greater than begin_frame_id ({begin})")
    fields = tuple((k, clean_caption(obj[k])) for k in CAPTION_FIELDS if isinstance(obj.get(k), str) and obj[k].strip())
    return InputItem(str(path.resolve()), kind, begin, end, fields)


def read_input_manifest(path: str | Path) -> list[InputItem]:
    """Items of a jsonl manifest: one JSON object per line (a path under ``path`` / ``video_path`` /
    ``image_path`` / ``file``, optional ``begin_frame_id`` / ``end_frame_id`` and caption fields) or a JSON
    string (a path). Relative paths are relative to the manifest's folder. A bad line is an error naming it."""
    path = Path(path)
    items = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc.msg})") from None
            items.append(_item_from_line(obj, path.parent.resolve(), where))
    return items


def collect_inputs(source: str | Path) -> list[InputItem]:
    """The items of a folder (recursively, supported media only, hidden files skipped), a ``.jsonl`` manifest,
    or a single media file."""
    source = Path(source)
    if source.is_dir():
        items = []
        for p in sorted(source.rglob("*")):
            rel = p.relative_to(source).parts
            if any(part.startswith(".") for part in rel) or not p.is_file():
                continue
            kind = media_kind(p)
            if kind is not None:
                items.append(InputItem(str(p.resolve()), kind))
        return items
    if source.is_file() and source.suffix.lower() == ".jsonl":
        return read_input_manifest(source)
    if source.is_file() and media_kind(source) is not None:
        return [InputItem(str(source.resolve()), media_kind(source))]
    if not source.exists():
        raise ValueError(f"input not found: {source}")
    raise ValueError(
        f"input {source} is neither a folder, a .jsonl manifest nor a media file "
        f"({', '.join(VIDEO_SUFFIXES + IMAGE_SUFFIXES)})"
    )


# --------------------------------------------------------------------------------------------
# Processing one input
# --------------------------------------------------------------------------------------------


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


def _drop_json(drop: Drop | None) -> dict | None:
    return None if drop is None else {"filter": drop.filter, "reason": drop.reason}


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
    analysis = analyze_video(
        item.path,
        info.fps,
        begin=begin,
        end=item.end,
        analysis_size=config.analysis_size,
        motion=ctx.motion,
        motion_fps=config.motion_fps,
    )
    if analysis.end <= begin:
        raise MediaError(f"{item.path}: no frames decoded from frame {begin} on (the video has fewer frames)")
    if item.end is not None and analysis.end < item.end:
        raise MediaError(f"{item.path}: the frame range ends at {item.end} but the video has {analysis.end} frames")
    if item.end is None and analysis.end < info.num_frames - max(1, info.num_frames // 20):
        # FFmpeg stops quietly at the damage in some containers: keep what decodes, but say so.
        result["warning"] = f"decoded {analysis.end} of the {info.num_frames} frames the container lists (truncated?)"
    decoded = (analysis.end - begin) / info.fps
    if decoded < config.min_duration:  # the container's duration was only an estimate
        result.update(
            status="dropped", drop=_drop_json(Drop("duration", f"{decoded:.3g} s < {config.min_duration:g} s"))
        )
        return
    cuts = (
        detect_cuts(analysis, info.fps, config.scene_threshold, config.min_scene_duration)
        if config.split_scenes
        else []
    )
    max_frames = math.floor(config.max_clip_duration * info.fps) if config.max_clip_duration else None
    clips = [{"begin": b, "end": e} for b, e in limit_length(split_scenes(begin, analysis.end, cuts), max_frames)]
    result["cuts"] = cuts
    for clip in clips:
        length = (clip["end"] - clip["begin"]) / info.fps
        if length < config.min_duration:
            clip["drop"] = _drop_json(Drop("scene_duration", f"clip {length:.3g} s < {config.min_duration:g} s"))
            continue
        motion = analysis.clip_motion(clip["begin"], clip["end"])
        clip["motion"] = None if math.isnan(motion) else motion
        clip["drop"] = _drop_json(check_motion(motion, config))
    alive = [c for c in clips if c["drop"] is None]
    captioner = ctx.captioner
    requests: dict[int, set[int]] = {}
    for clip in alive:
        clip["samples"] = sample_indices(clip["begin"], clip["end"], config.sample_frames)
        for i in clip["samples"]:
            requests.setdefault(i, set()).add(config.sample_size)
        if captioner is not None:
            clip["caption_samples"] = sample_indices(clip["begin"], clip["end"], captioner.num_frames)
            for i in clip["caption_samples"]:
                requests.setdefault(i, set()).add(captioner.frame_size)
    frames = read_video_frames(item.path, requests)
    fields = dict(item.fields)
    for clip in alive:
        sampled = np.stack([frames[(i, config.sample_size)] for i in clip.pop("samples")])  # [K, h, w, 3]
        clip["scores"], drop = _score_clip(ctx, sampled, "video")
        clip["drop"] = _drop_json(drop)
        caption_frames = None
        if captioner is not None:
            caption_frames = np.stack([frames[(i, captioner.frame_size)] for i in clip.pop("caption_samples")])
        if drop is not None:
            continue
        text, clip["caption_source"] = _caption(ctx, item, VIDEO_CAPTION_KEYS, caption_frames, "video")
        entry = {
            "video_path": item.path,
            "begin_frame_id": clip["begin"],
            "end_frame_id": clip["end"],
            "fps": info.fps,
            "width": analysis.width,
            "height": analysis.height,
            "tarsier2_caption": text or "",
        }
        for k in ("MiniCPM_V_2_6_caption", "quality_prompt"):
            if fields.get(k):
                entry[k] = fields[k]
        if text:
            result["entries"].append(entry)
        else:
            result["uncaptioned"].append({**entry, "uncaptioned": True})
    result["clips"] = clips
    result["status"] = "ok" if any(c["drop"] is None for c in clips) else "dropped"


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
    if long_caption:
        result["entries"].append(entry)
    else:
        result["uncaptioned"].append({**entry, "uncaptioned": True})
    result["status"] = "ok"


def process_item(item: InputItem, ctx: Context) -> dict:
    """Curate one input; never raises for a bad input (the error is in the result, status ``failed``)."""
    result: dict[str, Any] = {"key": item.key, "path": item.path, "kind": item.kind, "status": "failed"}
    result.update(error=None, drop=None, clips=[], entries=[], uncaptioned=[])
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


# --------------------------------------------------------------------------------------------
# Workers
# --------------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(config: CurateConfig, threads: int) -> None:
    # Before torch is imported in this process (only captioners and model scorers import it): N workers must not
    # each start one thread per core.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    _WORKER["config"] = config


def _work(item: InputItem) -> dict:
    if "ctx" not in _WORKER:
        _WORKER["ctx"] = Context(_WORKER["config"])  # SetupError propagates to the main process
    return process_item(item, _WORKER["ctx"])


def _crashed(item: InputItem) -> dict:
    return {
        "key": item.key,
        "path": item.path,
        "kind": item.kind,
        "status": "failed",
        "error": "the worker process died while processing this input (decoder crash or out of memory)",
        "drop": None,
        "clips": [],
        "entries": [],
        "uncaptioned": [],
    }


def _run_pool(items: list[InputItem], config: CurateConfig, workers: int, on_result: Callable[[dict], None]) -> None:
    """Process ``items`` on ``workers`` spawned processes, calling ``on_result`` in the main process as each
    finishes. After a worker death the inputs that were in flight are retried alone, to find the culprit."""
    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    pending, suspects = deque(items), deque()
    received = 0

    def deliver(result: dict) -> None:
        nonlocal received
        received += 1
        on_result(result)

    while pending or suspects:
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker, initargs=(config, threads)
        ) as pool:
            inflight: dict[Any, InputItem] = {}
            try:
                while suspects:  # one at a time: a crash now pins the culprit
                    item = suspects[0]
                    future = pool.submit(_work, item)
                    inflight[future] = item
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        if not received:
                            raise RuntimeError(
                                "curation worker processes die before finishing any input; run with --workers 1 "
                                "to see the error"
                            ) from None
                        suspects.popleft()
                        inflight.clear()
                        deliver(_crashed(item))
                        raise
                    suspects.popleft()
                    inflight.clear()
                    deliver(result)
                while pending or inflight:
                    while pending and len(inflight) < 2 * workers:
                        item = pending.popleft()
                        inflight[pool.submit(_work, item)] = item
                    done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                    for future in done:
                        result = future.result()  # BrokenProcessPool / SetupError leave the loop
                        inflight.pop(future)
                        deliver(result)
            except BrokenProcessPool:
                suspects.extend(inflight.values())
                continue
            except BaseException:  # Ctrl-C or a setup error: do not wait for the queued inputs
                pool.shutdown(wait=False, cancel_futures=True)
                raise


# --------------------------------------------------------------------------------------------
# State (resume) and outputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputPaths:
    manifest: Path
    uncaptioned: Path
    report: Path
    state: Path

    @classmethod
    def for_manifest(cls, out: str | Path) -> OutputPaths:
        out = Path(out)
        if out.suffix.lower() != ".jsonl":
            raise ValueError(f"the output manifest must be a .jsonl file; got {out}")
        stem = out.with_suffix("")
        return cls(
            out,
            stem.with_name(stem.name + ".uncaptioned.jsonl"),
            stem.with_name(stem.name + ".report.json"),
            stem.with_name(stem.name + ".state.jsonl"),
        )


def _normalise(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def load_state(path: Path) -> tuple[dict | None, dict[str, dict]]:
    """``(header, {key: last record})`` of a state file. A torn last line (the run was killed while writing it)
    is cut off the file; a bad line elsewhere is an error."""
    if not path.exists():
        return None, {}
    data = path.read_bytes()
    lines = data.split(b"\n")
    header, records, offset = None, {}, 0
    for n, raw in enumerate(lines):
        end = offset + len(raw) + 1
        if raw.strip():
            try:
                obj = json.loads(raw)
                if not isinstance(obj, dict):
                    raise ValueError("not an object")
            except ValueError:
                if all(not rest.strip() for rest in lines[n + 1 :]):
                    with open(path, "r+b") as f:  # torn final write: drop it, that input is redone
                        f.truncate(offset)
                    break
                raise ValueError(
                    f"{path}:{n + 1}: corrupt state line; remove the file (or run with --overwrite) to start over"
                ) from None
            if header is None:
                if obj.get("curate_state") != STATE_VERSION:
                    raise ValueError(f"{path} is not an infinitystar curate state file (version {STATE_VERSION})")
                header = obj
            else:
                records[obj["key"]] = obj
        offset = end
    return header, records


class StateLog:
    """Append-only progress log: each record is written, flushed and fsynced before the next input counts."""

    def __init__(self, path: Path, header: dict | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (open for the whole run; close() ends it)
        if header is not None:
            self.append(header)

    def append(self, record: dict) -> None:
        self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file next to its destination, fsync, rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _jsonl(records: Iterable[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _entry_sort_key(entry: dict) -> tuple:
    return (entry.get("video_path") or entry.get("image_path"), entry.get("begin_frame_id", 0))


def build_report(items: list[InputItem], records: dict[str, dict], config: CurateConfig, paths: OutputPaths) -> dict:
    """Counts of everything that happened to the current inputs, from their state records."""
    examples_per_filter = 5
    dropped: dict[str, dict] = {}

    def count(drop: dict, unit: str, where: str) -> None:
        slot = dropped.setdefault(drop["filter"], {"inputs": 0, "clips": 0, "examples": []})
        slot[unit] += 1
        if len(slot["examples"]) < examples_per_filter:
            slot["examples"].append(f"{where}: {drop['reason']}")

    done = [records[i.key] for i in items if i.key in records]
    kinds = Counter()
    clips_found = clips_kept = entries = uncaptioned = 0
    captions: Counter = Counter()
    failed, warnings = [], []
    for r in done:
        if r.get("warning"):
            warnings.append({"path": r["key"], "warning": r["warning"]})
        kinds[(r["kind"], r["status"])] += 1
        if r["status"] == "failed":
            failed.append({"path": r["key"], "error": r["error"]})
            continue
        if r.get("drop"):
            count(r["drop"], "inputs", r["key"])
        for c in r.get("clips", []):
            if r["kind"] == "video":
                clips_found += 1
            if c.get("drop"):
                where = f"{r['path']} [{c['begin']}:{c['end']})" if r["kind"] == "video" else r["path"]
                count(c["drop"], "clips" if r["kind"] == "video" else "inputs", where)
            else:
                clips_kept += r["kind"] == "video"
                captions[c.get("caption_source", "none")] += 1
        entries += len(r["entries"])
        uncaptioned += len(r["uncaptioned"])
    return {
        "manifest": str(paths.manifest),
        "complete": len(done) == len(items),
        "inputs": len(items),
        "processed": len(done),
        "remaining": len(items) - len(done),
        "videos": {
            "inputs": sum(v for (k, _), v in kinds.items() if k == "video"),
            "clips_found": clips_found,
            "clips_kept": clips_kept,
        },
        "images": {
            "inputs": sum(v for (k, _), v in kinds.items() if k == "image"),
            "kept": sum(1 for r in done if r["kind"] == "image" and r["status"] == "ok"),
        },
        "entries": entries,
        "uncaptioned": uncaptioned,
        "uncaptioned_manifest": str(paths.uncaptioned) if uncaptioned else None,
        "captions": dict(sorted(captions.items())),
        "dropped": dict(sorted(dropped.items())),
        "failed": failed,
        "warnings": warnings,
        "settings": config.to_json(),
    }


def format_report(report: dict) -> str:
    """A short human-readable summary of a report."""
    lines = [
        f"curated {report['processed']}/{report['inputs']} inputs"
        + ("" if report["complete"] else f" ({report['remaining']} left: rerun with --resume)"),
        f"  videos: {report['videos']['inputs']} inputs, {report['videos']['clips_found']} clips found, "
        f"{report['videos']['clips_kept']} kept; images: {report['images']['inputs']} inputs, "
        f"{report['images']['kept']} kept",
        f"  manifest: {report['entries']} entries -> {report['manifest']}",
    ]
    if report["uncaptioned"]:
        lines.append(f"  uncaptioned: {report['uncaptioned']} -> {report['uncaptioned_manifest']}")
    if report["captions"]:
        lines.append("  captions: " + ", ".join(f"{k} {v}" for k, v in report["captions"].items()))
    if report["dropped"]:
        lines.append("  dropped:")
        for name, slot in report["dropped"].items():
            what = ", ".join(f"{slot[u]} {u}" for u in ("inputs", "clips") if slot[u])
            lines.append(f"    {name:<14} {what:<22} e.g. {slot['examples'][0]}")
    if report["warnings"]:
        lines.append(f"  warnings: {len(report['warnings'])}")
        lines.extend(f"    {w['path']}: {w['warning']}" for w in report["warnings"][:10])
    if report["failed"]:
        lines.append(f"  failed: {len(report['failed'])}")
        for f in report["failed"][:10]:
            lines.append(
                f"    {f['error']}" if f["path"].split("#")[0] in f["error"] else f"    {f['path']}: {f['error']}"
            )
        if len(report["failed"]) > 10:
            lines.append(f"    ... ({len(report['failed']) - 10} more in the report)")
    return "\n".join(lines)


def write_outputs(items: list[InputItem], records: dict[str, dict], config: CurateConfig, paths: OutputPaths) -> dict:
    """(Re)write the manifest, the uncaptioned manifest and the report from the state records; return the report."""
    done = [records[i.key] for i in items if i.key in records]
    entries = sorted((e for r in done for e in r["entries"]), key=_entry_sort_key)
    uncaptioned = sorted((e for r in done for e in r["uncaptioned"]), key=_entry_sort_key)
    write_text_atomic(paths.manifest, _jsonl(entries))
    if uncaptioned:
        write_text_atomic(paths.uncaptioned, _jsonl(uncaptioned))
    elif paths.uncaptioned.exists():
        paths.uncaptioned.unlink()  # stale from an earlier run
    report = build_report(items, records, config, paths)
    write_text_atomic(paths.report, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def run_curate(
    source: str | Path,
    out: str | Path,
    config: CurateConfig | None = None,
    *,
    workers: int = 1,
    resume: bool = False,
    overwrite: bool = False,
    retry_failed: bool = False,
    max_items: int | None = None,
    progress: bool = False,
) -> dict:
    """Curate ``source`` (folder, ``.jsonl`` manifest or media file) into the manifest ``out``; return the report.

    ``resume``: continue from ``out``'s state file (inputs already done are skipped; the settings must match).
    ``overwrite``: discard an earlier run's state and outputs. ``retry_failed``: with ``resume``, process failed
    inputs again. ``max_items``: stop after that many new inputs (the outputs then hold what is done so far).
    """
    config = (config or CurateConfig()).resolved()
    if workers < 1:
        raise ValueError(f"workers must be >= 1; got {workers}")
    if max_items is not None and max_items < 0:
        raise ValueError(f"max_items must be >= 0; got {max_items}")
    paths = OutputPaths.for_manifest(out)
    if Path(source).resolve() in {p.resolve() for p in (paths.manifest, paths.uncaptioned, paths.state)}:
        raise ValueError(f"the input {source} is one of the outputs; choose another --out")
    check_scorer_specs(config.scorers)
    if config.captioner is not None:
        check_captioner_spec(config.captioner)
    items, seen = [], set()
    for item in collect_inputs(source):
        if item.key not in seen:
            seen.add(item.key)
            items.append(item)

    settings = _normalise(config.to_json())
    if overwrite:
        for p in (paths.state, paths.manifest, paths.uncaptioned, paths.report):
            if p.exists():
                p.unlink()
    header, records = load_state(paths.state)
    if header is not None and not resume:
        raise ValueError(
            f"{paths.state} exists from an earlier run; pass --resume to continue it or --overwrite to start over"
        )
    if header is not None and header["settings"] != settings:
        diff = sorted(k for k in settings if settings[k] != header["settings"].get(k))
        raise ValueError(
            f"the settings differ from the run being resumed ({', '.join(diff)}); use the same settings, or "
            "--overwrite to start over"
        )
    todo = [i for i in items if i.key not in records or (retry_failed and records[i.key]["status"] == "failed")]
    if max_items is not None:
        todo = todo[:max_items]

    log = StateLog(paths.state, None if header else {"curate_state": STATE_VERSION, "settings": settings})
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="input", desc="curate")

    def on_result(result: dict) -> None:
        log.append(result)
        records[result["key"]] = result
        if bar is not None:
            bar.update(1)

    try:
        if todo and workers == 1:
            ctx = Context(config)
            for item in todo:
                on_result(process_item(item, ctx))
        elif todo:
            _run_pool(todo, config, min(workers, len(todo)), on_result)
    finally:
        log.close()
        if bar is not None:
            bar.close()
        report = write_outputs(items, records, config, paths)
    return report
