"""Score a folder of generated outputs against the prompt file they were generated from.

This is the scoring half of ``infinitystar evaluate`` (the other half is :func:`infinitystar.batch.run_batch`).
Every item of the prompt file (:func:`infinitystar.prompt_files.read_prompt_file`) whose output ``{name}.mp4`` /
``{name}.png`` exists is scored; items without an output are listed, not fatal, so a half-finished batch can be
scored while it runs and scored again when it is done.

Per item (``scores.jsonl``, one line per scored item):

- ``flicker``: VBench's temporal flickering, ``(255 - mean |frame[t+1] - frame[t]|) / 255`` (videos only);
- ``smoothness``: the motion-smoothness proxy of :mod:`infinitystar.metrics` (videos of 3+ frames);
- ``world``: for prompts that follow the procedural world's grammar
  (:func:`infinitystar.world_captions.parse_caption`), the analytic prompt-following check of
  :mod:`infinitystar.world_report` (colour, shape, motion, background), with the prompt's split (``train`` /
  ``heldout`` by its colour-shape-motion combination, ``image`` for image prompts);
- ``clip``: CLIP score with a local CLIP folder (``100 * max(cos, 0)`` averaged over frames);
- ``first_frame_psnr``: for image-to-video items, PSNR of the first frame against the item's image, prepared exactly
  as the pipeline prepares it (cover-resize and centre crop to the output's size); capped at
  :data:`PSNR_CAP` dB so that identical frames stay a finite JSON number.

Over the set (``summary.json``): the mean and count of each per-item metric, world accuracy overall and per split,
and FVD against a folder of real videos with a local I3D (first ``fvd_frames`` frames of every clip).

Scoring resumes: rows are appended to ``scores.partial.jsonl`` as they are computed, and a row is reused on the next
run when its output file (size and modification time), prompt and reference are unchanged and it holds every
requested metric; ``scores.jsonl`` and ``summary.json`` are written atomically at the end. Real-video I3D features
are cached in ``fvd_real_features.npz`` under the same rule.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .devices import resolve_device
from .files import atomic_write, write_json, write_jsonl
from .naming import slugify
from .prompt_files import PromptItem

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "PSNR_CAP",
    "EvalReport",
    "WorldPromptSet",
    "find_output",
    "format_summary",
    "parse_metrics",
    "parse_world_spec",
    "read_frames",
    "score_outputs",
    "world_prompt_records",
    "write_report",
    "write_world_prompt_file",
    "write_world_prompts",
]

METRICS: tuple[str, ...] = ("flicker", "smoothness", "world", "clip", "fvd")
#: metrics that need no model weights: on unless ``--metrics`` says otherwise
DEFAULT_METRICS: tuple[str, ...] = ("flicker", "smoothness", "world")
#: per-item metrics (FVD is a set-level metric)
ITEM_METRICS: tuple[str, ...] = ("flicker", "smoothness", "world", "clip")
PSNR_CAP = 100.0
SCORES_FILE = "scores.jsonl"
PARTIAL_FILE = "scores.partial.jsonl"
SUMMARY_FILE = "summary.json"
REAL_FEATURES_FILE = "fvd_real_features.npz"
WORLD_PROMPTS_FILE = "world_prompts.jsonl"
#: output suffixes looked for, in order: what run_batch writes first, then other media a user may drop in
_OUTPUT_SUFFIXES = (".mp4", ".png", ".webm", ".mov", ".mkv", ".avi", ".gif", ".jpg", ".jpeg", ".webp", ".bmp")


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


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
# World prompt files
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorldPromptSet:
    """``n`` balanced world captions of ``split`` (``train`` / ``heldout``); ``image``: image captions (no motion)."""

    split: str
    n: int
    image: bool = False

    def __post_init__(self) -> None:
        from .world_scenes import SPLITS

        if self.split not in SPLITS:
            raise ValueError(f"unknown world split {self.split!r}; accepted: {', '.join(SPLITS)}")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"the number of world prompts must be a positive int, got {self.n!r}")

    @property
    def label(self) -> str:
        return f"{self.split}-image" if self.image else self.split


def parse_world_spec(text: str) -> list[WorldPromptSet]:
    """``"heldout:100,train:100"`` -> prompt sets; ``SPLIT-image:N`` asks for image captions of a split."""
    sets: list[WorldPromptSet] = []
    accepted = "SPLIT:N[,SPLIT:N...] with SPLIT one of train, heldout, train-image, heldout-image (e.g. heldout:100)"
    for part in (p.strip() for p in str(text).split(",")):
        name, sep, count = part.partition(":")
        if not sep or not count.strip().isdigit():
            raise ValueError(f"bad world prompt set {part!r}; accepted: {accepted}")
        split, _, kind = name.strip().lower().partition("-")
        if kind not in ("", "image"):
            raise ValueError(f"bad world prompt set {part!r}; accepted: {accepted}")
        sets.append(WorldPromptSet(split, int(count), image=kind == "image"))
    labels = [s.label for s in sets]
    if len(set(labels)) != len(labels):
        raise ValueError(f"world prompt sets repeat a split: {text!r}; give each split once")
    return sets


def world_prompt_records(sets: Iterable[WorldPromptSet], seed: int = 0) -> list[dict]:
    """Prompt-file records (``prompt``, ``name``, and ``duration: 0`` for images) of world captions.

    Names are ``{split}_{index:04d}_{caption slug}``, so files from different splits never collide and say what they
    show. Captions come from :func:`infinitystar.world_captions.prompts`: the split's combinations in a seeded order,
    each equally often.
    """
    from .world_captions import prompts

    records = []
    for s in sets:
        prefix = s.label.replace("-", "_")
        for i, text in enumerate(prompts(s.split, s.n, seed, image=s.image)):
            record: dict[str, Any] = {"prompt": text, "name": f"{prefix}_{i:04d}_{slugify(text, 80)}"}
            if s.image:
                record["duration"] = 0
            records.append(record)
    return records


def write_world_prompt_file(path: str | Path, sets: str | Sequence[WorldPromptSet], seed: int = 0) -> Path:
    """Write a jsonl prompt file of world captions (``sets``: prompt sets or a spec such as ``heldout:100``)."""
    if isinstance(sets, str):
        sets = parse_world_spec(sets)
    return write_jsonl(path, world_prompt_records(sets, seed))


def write_world_prompts(path: str | Path, split: str, n: int, seed: int = 0, *, image: bool = False) -> Path:
    """Write ``n`` world captions of one ``split`` as a jsonl prompt file for ``infinitystar evaluate``."""
    return write_world_prompt_file(path, [WorldPromptSet(split, n, image)], seed)


# --------------------------------------------------------------------------------------------
# Reading outputs
# --------------------------------------------------------------------------------------------


def find_output(out_dir: str | Path, item: PromptItem) -> Path | None:
    """The output file of ``item`` in ``out_dir`` (``{name}.mp4``, ``{name}.png``, other media), or None."""
    out_dir = Path(out_dir)
    for suffix in _OUTPUT_SUFFIXES:
        path = out_dir / f"{item.name}{suffix}"
        if path.is_file():
            return path
    return None


def read_frames(path: str | Path) -> np.ndarray:
    """An image or video file as uint8 frames ``[T, H, W, 3]`` (RGB), videos resampled to 16 fps.

    Decoded straight to uint8 by :func:`infinitystar.media.read_video_uint8`, on the 16 fps grid of
    :func:`infinitystar.media.read_video`. An unreadable file is a ``MediaError`` (a ``ValueError``).
    """
    from .media.decode import decode_image, read_video_uint8
    from .media.probe import check_media_file

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"output not found: {path}")
    _, kind = check_media_file(path)
    if kind == "image":
        return np.asarray(decode_image(path))[None]  # [H, W, 3] -> [1, H, W, 3]
    return read_video_uint8(path)


def _reference_frame(path: str, hw: tuple[int, int]) -> np.ndarray:
    """The item's image as the pipeline prepared it (cover-resize + centre crop to ``hw``): uint8 ``[1, H, W, 3]``."""
    from .media import read_image

    x = read_image(path, size=hw)  # [3, H, W] in [-1, 1]
    return ((x.permute(1, 2, 0).numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)[None]


def _signature(path: Path) -> dict:
    st = path.stat()
    return {"file": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _reference_signature(item: PromptItem) -> dict | None:
    """Signature of the item's image (so that a replaced reference is rescored), None without one."""
    return _signature(Path(item.image)) if item.image and Path(item.image).is_file() else None


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def _world_split(parsed) -> str:
    from .world_scenes import HELDOUT_COMBOS

    if parsed.motion is None:
        return "image"
    return "heldout" if (parsed.color, parsed.shape, parsed.motion) in HELDOUT_COMBOS else "train"


def _parse_world(prompt: str):
    from .world_captions import parse_caption

    try:
        return parse_caption(prompt)
    except ValueError:
        return None


def score_frames(
    frames: np.ndarray,
    item: PromptItem,
    metrics: Sequence[str],
    *,
    clip_scorer=None,
) -> dict:
    """Per-item scores of uint8 ``frames [T, H, W, 3]`` for ``item`` (metrics that do not apply are left out)."""
    from . import metrics as m

    row: dict[str, Any] = {}
    t = frames.shape[0]
    if "flicker" in metrics and t >= 2:
        row["flicker"] = m.temporal_flickering(frames)
    if "smoothness" in metrics and t >= 3:
        row["smoothness"] = m.motion_smoothness_proxy(frames)
    if "world" in metrics:
        parsed = _parse_world(item.prompt)
        if parsed is not None:
            from .world_report import evaluate_video

            report = evaluate_video(frames, item.prompt)
            a = report.analysis
            row["world"] = {
                "split": _world_split(parsed),
                "color": report.color_correct,
                "shape": report.shape_correct,
                "motion": report.motion_correct,
                "background": report.background_correct,
                "all": report.all_correct,
                "detected": {"color": a.color, "shape": a.shape, "motion": a.motion, "background": a.background},
            }
    if "clip" in metrics:
        if clip_scorer is None:
            raise ValueError("metric 'clip' needs a loaded CLIPScorer")
        row["clip"] = clip_scorer.score(frames, item.prompt)
    if item.image:
        from .world_eval import psnr

        reference = _reference_frame(item.image, frames.shape[1:3])
        row["first_frame_psnr"] = min(psnr(frames[:1], reference), PSNR_CAP)
    return row


@dataclass
class EvalReport:
    """Scores of one folder: per-item rows (prompt-file order), what is missing or unreadable, and the summary."""

    rows: list[dict]
    missing: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    reused: int = 0  #: rows taken from an earlier run instead of recomputed


def _read_rows(path: Path) -> dict[str, dict]:
    """Rows of an earlier scores file by item name (a torn last line of a killed run is ignored)."""
    rows: dict[str, dict] = {}
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("name"), str):
            rows[row["name"]] = row
    return rows


def _reusable(row: dict | None, item: PromptItem, signature: dict, metrics: Sequence[str], clip_id: str | None):
    if row is None or row.get("output") != signature or row.get("prompt") != item.prompt:
        return False
    if row.get("image") != item.image or row.get("reference") != _reference_signature(item):
        return False
    wanted = [x for x in metrics if x in ITEM_METRICS]
    if not set(wanted) <= set(row.get("computed", ())):
        return False
    return "clip" not in wanted or row.get("clip_model") == clip_id


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
    unknown = [x for x in metrics if x not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; accepted: {', '.join(METRICS)}")
    if not items:
        raise ValueError("nothing to score: the prompt file has no items")
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ValueError(f"output folder not found: {out_dir}")
    log = log or (lambda msg: None)
    device = str(resolve_device(device))

    clip_scorer, clip_id = None, None
    if "clip" in metrics:
        if clip_model is None:
            raise ValueError("metric 'clip' needs clip_model, a local CLIPModel folder")
        clip_scorer, clip_id = _load_clip(clip_model, device), str(Path(clip_model).resolve())
    fvd_state = None
    if "fvd" in metrics:
        if i3d is None or real_videos is None:
            raise ValueError("metric 'fvd' needs i3d (a TorchScript I3D file) and real_videos (a folder of videos)")
        if fvd_frames < 1:
            raise ValueError(f"fvd_frames must be >= 1, got {fvd_frames}")
        fvd_state = _FVD(i3d, real_videos, fvd_frames, i3d_resolution, device, out_dir)

    partial = out_dir / PARTIAL_FILE
    earlier = {} if rescore else {**_read_rows(out_dir / SCORES_FILE), **_read_rows(partial)}
    report = EvalReport(rows=[])
    wanted = [x for x in metrics if x in ITEM_METRICS]
    with open(partial, "a" if not rescore else "w", encoding="utf-8") as partial_f:
        for item in items:
            path = find_output(out_dir, item)
            if path is None:
                report.missing.append(item.name)
                continue
            signature = _signature(path)
            old = earlier.get(item.name)
            need_frames = fvd_state is not None or not _reusable(old, item, signature, metrics, clip_id)
            frames = None
            if need_frames:
                try:
                    frames = read_frames(path)
                except ValueError as exc:
                    report.unreadable[item.name] = str(exc)
                    log(f"unreadable {path.name}: {exc}")
                    continue
            if _reusable(old, item, signature, metrics, clip_id):
                row = old
                report.reused += 1
            else:
                try:
                    scores = score_frames(frames, item, metrics, clip_scorer=clip_scorer)
                except ValueError as exc:  # e.g. an unreadable reference image
                    report.unreadable[item.name] = str(exc)
                    log(f"cannot score {path.name}: {exc}")
                    continue
                t, h, w = frames.shape[:3]
                row = {
                    "name": item.name,
                    "prompt": item.prompt,
                    "seed": item.seed,
                    "sample": item.sample,
                    "image": item.image,
                    "reference": _reference_signature(item),
                    "output": signature,
                    "frames": t,
                    "height": h,
                    "width": w,
                    "computed": wanted,
                    **({"clip_model": clip_id} if clip_id else {}),
                    **scores,
                }
                partial_f.write(json.dumps(row) + "\n")
                partial_f.flush()
                log(f"scored {path.name}")
            report.rows.append(row)
            if fvd_state is not None and frames is not None:
                fvd_state.add_generated(frames)
    report.summary = summarize(report, metrics, fvd=fvd_state.result() if fvd_state is not None else None)
    return report


def _load_clip(clip_model: str | Path, device: str):
    from .metrics import CLIPScorer

    try:
        return CLIPScorer(clip_model, device=device)
    except ImportError as exc:
        raise ValueError(
            f"CLIP score needs the optional dependency transformers ({exc}): pip install 'infinitystar[eval]'"
        ) from exc


class _FVD:
    """I3D features of generated clips (added one by one, extracted in batches) and of the real videos (cached)."""

    def __init__(self, i3d, real_videos, frames: int, resolution: int, device: str, out_dir: Path) -> None:
        from .media import VIDEO_SUFFIXES
        from .metrics import I3DFeatureExtractor

        folder = Path(real_videos)
        if not folder.is_dir():
            raise ValueError(f"real-videos folder not found: {folder}")
        self.real_paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if len(self.real_paths) < 2:
            raise ValueError(
                f"FVD needs at least 2 real videos in {folder} ({', '.join(VIDEO_SUFFIXES)}); "
                f"found {len(self.real_paths)}"
            )
        self.extractor = I3DFeatureExtractor(i3d, resolution=resolution, device=device)
        self.i3d, self.folder, self.frames, self.resolution = Path(i3d), folder, frames, resolution
        self.cache = out_dir / REAL_FEATURES_FILE
        self.pending: list[np.ndarray] = []
        self.features: list[np.ndarray] = []
        self.too_short = 0

    def add_generated(self, frames: np.ndarray) -> None:
        if frames.shape[0] < self.frames:
            self.too_short += 1
            return
        self.pending.append(np.ascontiguousarray(frames[: self.frames]))
        if len(self.pending) >= self.extractor.batch_size:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.features.append(self.extractor(self.pending))  # [B, D]
            self.pending = []

    def _real_key(self) -> str:
        st = self.i3d.stat()
        files = []
        for p in self.real_paths:
            s = p.stat()
            files.append([str(p.relative_to(self.folder)), s.st_size, s.st_mtime_ns])
        i3d = [str(self.i3d.resolve()), st.st_size, st.st_mtime_ns]
        return json.dumps({"i3d": i3d, "frames": self.frames, "resolution": self.resolution, "files": files})

    def _real_features(self) -> tuple[np.ndarray, int]:
        key = self._real_key()
        if self.cache.is_file():
            try:
                with np.load(self.cache) as data:
                    if str(data["key"]) == key:
                        return data["features"], int(data["skipped"])
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache is recomputed
        feats, batch, skipped = [], [], 0
        for path in self.real_paths:
            try:
                frames = read_frames(path)
            except ValueError:
                skipped += 1
                continue
            if frames.shape[0] < self.frames:
                skipped += 1
                continue
            batch.append(np.ascontiguousarray(frames[: self.frames]))
            if len(batch) >= self.extractor.batch_size:
                feats.append(self.extractor(batch))
                batch = []
        if batch:
            feats.append(self.extractor(batch))
        features = np.concatenate(feats) if feats else np.zeros((0, 0))

        def _write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, key=np.asarray(key), features=features, skipped=np.asarray(skipped))

        atomic_write(self.cache, _write)
        return features, skipped

    def result(self) -> dict:
        from .metrics import frechet_distance_from_features

        self._flush()
        real, real_skipped = self._real_features()
        fake = np.concatenate(self.features) if self.features else np.zeros((0, 0))
        out: dict[str, Any] = {
            "value": None,
            "generated": int(fake.shape[0]),
            "real": int(real.shape[0]),
            "frames": self.frames,
            "generated_too_short": self.too_short,
            "real_skipped": real_skipped,
        }
        if fake.shape[0] < 2 or real.shape[0] < 2:
            out["note"] = f"FVD needs at least 2 clips of {self.frames}+ frames on each side"
        else:
            out["value"] = frechet_distance_from_features(real, fake)
        return out


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


def _mean(values: list[float]) -> dict:
    return {"mean": (sum(values) / len(values)) if values else None, "n": len(values)}


def _world_accuracy(flags: list[dict]) -> dict:
    def frac(key: str) -> float | None:
        vals = [f[key] for f in flags if f[key] is not None]
        return sum(vals) / len(vals) if vals else None

    return {"n": len(flags), **{k: frac(k) for k in ("color", "shape", "motion", "all", "background")}}


def summarize(report: EvalReport, metrics: Sequence[str], *, fvd: dict | None = None) -> dict:
    """The summary of ``report``'s rows: mean and count per metric, world accuracy overall and per split."""
    rows = report.rows
    summary: dict[str, Any] = {
        "items": len(rows) + len(report.missing) + len(report.unreadable),
        "scored": len(rows),
        "missing": list(report.missing),
        "unreadable": dict(report.unreadable),
        "metrics": {},
        "world": None,
        "fvd": fvd,
    }
    for name in ("flicker", "smoothness", "clip"):
        if name in metrics:
            summary["metrics"][name] = _mean([r[name] for r in rows if name in r])
    psnrs = [r["first_frame_psnr"] for r in rows if "first_frame_psnr" in r]
    if psnrs:
        summary["metrics"]["first_frame_psnr"] = _mean(psnrs)
    if "world" in metrics:
        flags = [r["world"] for r in rows if "world" in r]
        if flags:
            world = _world_accuracy(flags)
            splits = sorted({f["split"] for f in flags}, key=("train", "heldout", "image").index)
            world["splits"] = {s: _world_accuracy([f for f in flags if f["split"] == s]) for s in splits}
            summary["world"] = world
    return summary


def write_report(report: EvalReport, out_dir: str | Path, extra: dict | None = None) -> tuple[Path, Path]:
    """Write ``scores.jsonl`` and ``summary.json`` (with ``extra`` keys merged in) atomically; drop the partial log."""
    out_dir = Path(out_dir)
    scores = write_jsonl(out_dir / SCORES_FILE, report.rows)
    summary = write_json(out_dir / SUMMARY_FILE, {**report.summary, **(extra or {})}, indent=1)
    (out_dir / PARTIAL_FILE).unlink(missing_ok=True)
    return scores, summary


_LABELS = {
    "flicker": "temporal flickering",
    "smoothness": "motion smoothness (proxy)",
    "clip": "CLIP score",
    "first_frame_psnr": "first-frame PSNR (dB)",
}


def format_summary(summary: dict) -> str:
    """The summary as a plain-text table."""

    def num(v: float | None, digits: int = 4) -> str:
        return "n/a" if v is None else f"{v:.{digits}f}"

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}%"

    lines = [f"scored {summary['scored']} of {summary['items']} items"]
    if summary["missing"]:
        shown = ", ".join(summary["missing"][:10]) + (" ..." if len(summary["missing"]) > 10 else "")
        lines.append(f"missing outputs ({len(summary['missing'])}): {shown}")
    for name, error in summary["unreadable"].items():
        lines.append(f"unreadable: {name}: {error}")
    lines.append("")
    lines.append(f"  {'metric':<28} {'mean':>10} {'n':>6}")
    for name, entry in summary["metrics"].items():
        lines.append(f"  {_LABELS.get(name, name):<28} {num(entry['mean']):>10} {entry['n']:>6}")
    fvd = summary.get("fvd")
    if fvd is not None:
        value = num(fvd["value"], 2) if fvd["value"] is not None else f"n/a ({fvd.get('note', '')})"
        lines.append(
            f"  {'FVD':<28} {value:>10} {fvd['generated']:>6}  vs {fvd['real']} real videos, {fvd['frames']} frames"
        )
    world = summary.get("world")
    if world is not None:
        lines.append("")
        lines.append(
            f"  {'world accuracy':<16} {'color':>7} {'shape':>7} {'motion':>7} {'all':>7} {'backgr.':>7} {'n':>6}"
        )
        for label, acc in [("all prompts", world), *world["splits"].items()]:
            lines.append(
                f"  {label:<16} {pct(acc['color']):>7} {pct(acc['shape']):>7} {pct(acc['motion']):>7} "
                f"{pct(acc['all']):>7} {pct(acc['background']):>7} {acc['n']:>6}"
            )
    return "\n".join(lines)
