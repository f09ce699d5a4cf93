"""Datasets of the procedural world: an indexable training view and a writer of video files with a manifest.

Why it exists: the package ships a small default model that must generate something checkable offline on a laptop
CPU. Real video data is neither small nor checkable, so that model is trained on a procedural world, where every
caption is exact and every generated video can be scored analytically (:mod:`infinitystar.world.analysis`).

The world itself lives in smaller modules that this one only combines: :mod:`infinitystar.world.scenes` (vocabulary,
split, scene sampling), :mod:`infinitystar.world.captions` (caption grammar and prompts) and
:mod:`infinitystar.world.render` (frames). This module turns them into training items and files: an item depends only
on ``(seed, index)``, so any worker reading any index in any order sees the same data.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from infinitystar.world.captions import caption
from infinitystar.world.render import render
from infinitystar.world.scenes import Scene, WorldSpec, _check_split, sample_scene

__all__ = ["WorldDataset", "write_world"]


def _mix(seed: int, index: int) -> int:
    """A 63-bit seed for item ``index`` of a dataset seeded with ``seed`` (splitmix64 finaliser): nearby indices and
    seeds get unrelated generators, and the item does not depend on which other items were drawn."""
    z = (seed * 0x9E3779B97F4A7C15 + index + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) >> 1


@dataclass
class WorldDataset:
    """An indexable, deterministic view of the world for training: item ``i`` is ``(video, caption)``.

    ``video`` is float32 ``[3, T, H, W]`` in ``[-1, 1]`` (the layout ``VideoVAE.encode`` takes after adding a batch
    axis); ``caption`` the world caption. Item ``i`` depends only on ``(seed, i)``: any worker, any order, same data.
    A fraction ``image_fraction`` of the items (chosen by index) are single-frame images with image captions.
    ``duration_tag=True`` prefixes video captions with ``<<<t=Ns>>>`` (whole seconds of the clip, at least 1).
    """

    length: int
    seed: int = 0
    split: str = "train"
    spec: WorldSpec = field(default_factory=WorldSpec)
    image_fraction: float = 0.0
    duration_tag: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.length, bool) or not isinstance(self.length, int) or self.length < 0:
            raise ValueError(f"length must be a non-negative int, got {self.length!r}")
        _check_split(self.split)
        if not 0.0 <= self.image_fraction <= 1.0:
            raise ValueError(f"image_fraction must be in [0, 1], got {self.image_fraction}")
        if self.spec.frames == 1 and self.image_fraction < 1.0:
            raise ValueError("a WorldSpec of 1 frame makes images only: set image_fraction=1.0 (or use more frames)")
        if self.duration_tag and self.spec.duration < 1:
            raise ValueError(
                f"duration_tag needs clips of at least 1 s; {self.spec.frames} frames last {self.spec.duration} s"
            )

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> Scene:
        """The scene of item ``index`` (negative indices count from the end)."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for a WorldDataset of length {self.length}")
        index %= self.length
        g = torch.Generator().manual_seed(_mix(self.seed, index))
        is_image = bool(torch.rand(1, generator=g, dtype=torch.float64).item() < self.image_fraction)
        return sample_scene(g, self.split, image=is_image, spec=self.spec)

    def caption(self, index: int) -> str:
        scene = self.scene(index)
        text = caption(scene)
        if self.duration_tag and not scene.is_image:
            text = f"<<<t={int(self.spec.duration)}s>>>{text}"
        return text

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        scene = self.scene(index)
        frames = render(scene, 1 if scene.is_image else self.spec.frames, self.spec.size)  # [T, H, W, 3] uint8
        # [T, H, W, 3] -> [3, T, H, W] in [-1, 1], with the same arithmetic as media.read_video (bit-identical)
        video = (frames.float() / 255.0).permute(3, 0, 1, 2) * 2 - 1
        return video, self.caption(index)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, str]]:
        for i in range(self.length):
            yield self[i]


def write_world(
    folder: str | Path,
    n: int,
    seed: int = 0,
    split: str = "train",
    spec: WorldSpec | None = None,
    *,
    image_fraction: float = 0.0,
    manifest_name: str = "manifest.jsonl",
) -> Path:
    """Write ``n`` world items to ``folder`` (videos as H.264 mp4, images as png) and a jsonl manifest of
    ``{"path": <relative to the folder>, "caption": ...}`` lines, for the data pipeline and ``infinitystar extract``.

    Items are those of ``WorldDataset(n, seed, split, spec, image_fraction)``. Every file, the manifest last, is
    written atomically; the scene parameters go into each file's metadata (``scene`` tag, JSON). Returns the
    manifest's path. Note that mp4 is lossy (yuv420p): pixel values near edges change slightly.
    """
    from infinitystar.files import jsonl_text, write_text
    from infinitystar.media import write_video

    dataset = WorldDataset(n, seed, split, spec or WorldSpec(), image_fraction)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        scene = dataset.scene(i)
        frames = render(scene, 1 if scene.is_image else dataset.spec.frames, dataset.spec.size)
        name = f"{split}_{i:06d}.{'png' if scene.is_image else 'mp4'}"
        text = dataset.caption(i)
        write_video(folder / name, frames, metadata={"caption": text, "scene": json.dumps(scene.to_dict())})
        lines.append({"path": name, "caption": text})
    manifest = folder / manifest_name

    write_text(manifest, jsonl_text(lines))
    return manifest
