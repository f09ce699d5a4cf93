"""The model-backed parts of scoring: FVD over a whole output folder, and loading the CLIP scorer.

Separate from the per-item scoring loop (:mod:`infinitystar.evaluation.score`) because FVD is a set-level metric with
its own state: generated clips are added one by one as the loop reads them and sent to the I3D in batches, and the
real videos' features are computed once and cached in ``fvd_real_features.npz`` (reused while the I3D file, the
clip length, the resolution and every real video are unchanged). Both loaders turn a missing optional dependency
or a missing file into one ``ValueError`` that says what to install or pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from infinitystar.evaluation.files import read_frames
from infinitystar.evaluation.metrics import frechet_distance_from_features
from infinitystar.files import atomic_write

__all__ = ["REAL_FEATURES_FILE", "FVDAccumulator", "load_clip"]

#: the cache of the real videos' I3D features, in the output folder
REAL_FEATURES_FILE = "fvd_real_features.npz"


def load_clip(clip_model: str | Path, device: str):
    """A :class:`~infinitystar.evaluation.extractors.CLIPScorer` on ``device``; a missing ``transformers`` is a
    ``ValueError`` naming the extra to install, like every other bad input of ``infinitystar evaluate``."""
    from infinitystar.evaluation.extractors import CLIPScorer

    try:
        return CLIPScorer(clip_model, device=device)
    except ImportError as exc:
        raise ValueError(
            f"CLIP score needs the optional dependency transformers ({exc}): pip install 'infinitystar[eval]'"
        ) from exc


class FVDAccumulator:
    """I3D features of generated clips (added one by one, extracted in batches) and of the real videos (cached)."""

    def __init__(self, i3d, real_videos, frames: int, resolution: int, device: str, out_dir: Path) -> None:
        from infinitystar.evaluation.extractors import I3DFeatureExtractor
        from infinitystar.media import VIDEO_SUFFIXES

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
        """Add one generated clip (uint8 ``[T, H, W, 3]``); its first ``self.frames`` frames are used, a shorter
        clip is only counted."""
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
        """The summary's ``fvd`` entry: the value (None with fewer than 2 clips on a side) and the clip counts."""
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
