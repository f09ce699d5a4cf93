"""A procedural, captioned video world: one coloured shape moving on a plain background.

Why it exists: the package ships a small default model that must generate something checkable offline on a laptop
CPU. Real video data is neither small nor checkable, so that model is trained on this world, where every caption is
exact and every generated video can be scored analytically (:mod:`infinitystar.world_eval`).

The world, in one paragraph: a video shows ONE object (8 colours x 3 shapes) on a plain background (3 colours, never
close to the object's colour), doing one of 5 motions, for ``1 + 4k`` frames (17 by default, one second at 16 fps)
at a size that is a multiple of 16 (128 x 128 by default). Objects span 34-48 % of the frame (3-4 latent tokens of
the 16x VAE, so that their shape survives tokenization); moving ones travel 22-40 % of the frame over the clip and
stay fully inside it; still objects do not move at all. Its caption follows one grammar::

    a {color} {shape} {motion} on a {background} background      (videos)
    a {color} {shape} on a {background} background               (images)

e.g. ``"a red circle moving right on a black background"``.

Split: :data:`HELDOUT_COMBOS` holds out 18 of the 120 colour-shape-motion combinations (15 %) from training, chosen
so that every colour, shape and motion, and every colour-shape, colour-motion and shape-motion pair, still appears in
training. Held-out prompts therefore measure compositional generalisation only: the model has seen every word and
every pair of words, never that triple.

Everything is deterministic: a scene is drawn from an explicit ``torch.Generator`` (or an int seed), and rendering
is a pure numpy function of the scene, so the same seed gives the same bytes on every machine.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .sizes import FPS

__all__ = [
    "ALL_COMBOS",
    "BACKGROUNDS",
    "COLORS",
    "HELDOUT_COMBOS",
    "MIN_BACKGROUND_DISTANCE",
    "MOTIONS",
    "MOTION_DIRECTIONS",
    "SHAPES",
    "SPLITS",
    "TRAIN_COMBOS",
    "ParsedCaption",
    "Scene",
    "WorldDataset",
    "WorldSpec",
    "allowed_backgrounds",
    "caption",
    "combos",
    "parse_caption",
    "prompts",
    "render",
    "sample_scene",
    "write_world",
]

# ----------------------------------------------------------------------------------------------------------------------
# Vocabulary of the world (fixed forever: the default model and the built-in text encoder depend on these words)

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 20),
    "green": (30, 190, 40),
    "blue": (40, 90, 255),
    "yellow": (250, 240, 40),
    "white": (255, 255, 255),
    "orange": (255, 130, 0),
    "purple": (140, 40, 210),
    "cyan": (0, 220, 230),
}
"""Object colours (RGB). Every pair is at least ~110 apart in RGB, so they stay apart after VAE round trips."""

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "navy": (20, 24, 96),
}
"""Background colours (RGB)."""

MIN_BACKGROUND_DISTANCE = 100.0
"""A background is allowed for an object colour only if their RGB distance is at least this (never too close)."""

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

MOTIONS: tuple[str, ...] = ("moving left", "moving right", "moving up", "moving down", "staying still")

MOTION_DIRECTIONS: dict[str, tuple[int, int]] = {
    "moving left": (-1, 0),
    "moving right": (1, 0),
    "moving up": (0, -1),  # image rows grow downwards
    "moving down": (0, 1),
    "staying still": (0, 0),
}
"""Unit direction ``(dx, dy)`` of each motion in image coordinates (x to the right, y downwards)."""

SPLITS: tuple[str, ...] = ("train", "heldout")

ALL_COMBOS: tuple[tuple[str, str, str], ...] = tuple((c, s, m) for c in COLORS for s in SHAPES for m in MOTIONS)
"""All 8 x 3 x 5 = 120 colour-shape-motion combinations, in a fixed order."""

HELDOUT_COMBOS: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("red", "square", "moving down"),
        ("red", "triangle", "moving right"),
        ("green", "circle", "moving up"),
        ("green", "square", "moving left"),
        ("blue", "circle", "moving up"),
        ("blue", "triangle", "moving down"),
        ("yellow", "circle", "staying still"),
        ("yellow", "square", "moving up"),
        ("yellow", "triangle", "moving left"),
        ("white", "square", "staying still"),
        ("white", "triangle", "moving left"),
        ("orange", "circle", "moving left"),
        ("orange", "triangle", "moving right"),
        ("purple", "circle", "moving down"),
        ("purple", "square", "moving right"),
        ("purple", "triangle", "staying still"),
        ("cyan", "circle", "moving right"),
        ("cyan", "square", "moving up"),
    }
)
"""The 18 held-out combinations (15 % of 120), fixed and documented here rather than computed, so that they can never
change by accident. Each colour is held out 2-3 times, each shape 6 times, each motion 3-4 times; no colour-shape or
colour-motion pair is held out twice and no shape-motion pair more than twice, so every word and every pair of words
still appears in training. The demo prompt "a red circle moving right ..." is a training combination."""

TRAIN_COMBOS: tuple[tuple[str, str, str], ...] = tuple(c for c in ALL_COMBOS if c not in HELDOUT_COMBOS)


def combos(split: str) -> tuple[tuple[str, str, str], ...]:
    """The colour-shape-motion combinations of ``split`` (``"train"`` or ``"heldout"``), in a fixed order."""
    _check_split(split)
    return TRAIN_COMBOS if split == "train" else tuple(c for c in ALL_COMBOS if c in HELDOUT_COMBOS)


def _image_pairs(split: str) -> tuple[tuple[str, str], ...]:
    """Colour-shape pairs for image scenes of ``split``.

    Images have no motion, and every colour-shape pair appears in training videos by construction, so the held-out
    image pairs are those of the held-out triples: they test image generation on the same objects, not composition.
    """
    seen: dict[tuple[str, str], None] = {}
    for c, s, _ in combos(split):
        seen.setdefault((c, s))
    return tuple(seen)


def allowed_backgrounds(color: str) -> tuple[str, ...]:
    """Backgrounds that are at least :data:`MIN_BACKGROUND_DISTANCE` away from object colour ``color``."""
    _check_choice("color", color, COLORS)
    return tuple(b for b, rgb in BACKGROUNDS.items() if math.dist(rgb, COLORS[color]) >= MIN_BACKGROUND_DISTANCE)


def _check_choice(what: str, value: object, accepted) -> None:
    if value not in accepted:
        raise ValueError(f"unknown {what} {value!r}; accepted: {', '.join(accepted)}")


def _check_split(split: object) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")


# ----------------------------------------------------------------------------------------------------------------------
# Scenes


@dataclass(frozen=True)
class WorldSpec:
    """How scenes are drawn: clip length and the ranges of object size, travel and margin.

    Sizes and positions are fractions of the frame, so one scene renders at any resolution. ``size_range`` is the
    object's side (circle diameter, square side, triangle base and height) as a fraction of the shorter frame side;
    ``travel_range`` the distance a moving object covers from the first to the last frame, as a fraction of the frame
    along its motion; ``margin`` the gap kept between the object and the frame's edge at all times.
    """

    frames: int = 17
    size: int | tuple[int, int] = 128
    size_range: tuple[float, float] = (0.34, 0.48)
    travel_range: tuple[float, float] = (0.22, 0.40)
    margin: float = 0.03

    def __post_init__(self) -> None:
        _check_frames(self.frames)
        _frame_hw(self.size)
        lo, hi = self.size_range
        tlo, thi = self.travel_range
        if not 0 < lo <= hi < 1:
            raise ValueError(f"size_range must satisfy 0 < lo <= hi < 1, got {self.size_range}")
        if not 0 <= tlo <= thi < 1:
            raise ValueError(f"travel_range must satisfy 0 <= lo <= hi < 1, got {self.travel_range}")
        if not 0 <= self.margin < 0.25:
            raise ValueError(f"margin must be in [0, 0.25), got {self.margin}")
        if 2 * self.margin + hi + thi > 1:
            raise ValueError(
                f"the largest object ({hi}) travelling the longest distance ({thi}) with margins ({self.margin}) "
                "does not fit in the frame: need 2 * margin + max size + max travel <= 1"
            )

    @classmethod
    def with_ranges(cls, frames: int, size, size_range=None, travel_range=None) -> WorldSpec:
        """A spec whose ranges fall back to the defaults where ``None`` (a recipe or flag leaving them unset)."""
        given = {"size_range": size_range, "travel_range": travel_range}
        return cls(frames=frames, size=size, **{k: tuple(v) for k, v in given.items() if v is not None})

    @property
    def duration(self) -> float:
        """Seconds from the first to the last frame at 16 fps (1.0 for 17 frames)."""
        return (self.frames - 1) / FPS


@dataclass(frozen=True)
class Scene:
    """One object on a plain background; everything needed to render and caption a video (or an image).

    Attributes:
        color: object colour, a key of :data:`COLORS`.
        shape: ``"circle"``, ``"square"`` or ``"triangle"`` (isosceles, apex up, base = height = ``size``).
        motion: one of :data:`MOTIONS`, or ``None`` for an image scene (its caption has no motion).
        background: a key of :data:`BACKGROUNDS`.
        size: object side as a fraction of the shorter frame side.
        start: ``(x, y)`` centre of the object's bounding box at the first frame, as fractions of width and height.
        speed: frames (fractions of the frame side along the motion) travelled per second at 16 fps; 0 when still.
    """

    color: str
    shape: str
    motion: str | None
    background: str
    size: float
    start: tuple[float, float]
    speed: float = 0.0

    def __post_init__(self) -> None:
        _check_choice("color", self.color, COLORS)
        _check_choice("shape", self.shape, SHAPES)
        if self.motion is not None:
            _check_choice("motion", self.motion, MOTIONS)
        _check_choice("background", self.background, BACKGROUNDS)
        if not (isinstance(self.size, int | float) and 0 < self.size < 1):
            raise ValueError(f"size must be a fraction of the frame in (0, 1), got {self.size!r}")
        if len(self.start) != 2 or not all(isinstance(v, int | float) and math.isfinite(v) for v in self.start):
            raise ValueError(f"start must be (x, y) fractions of the frame, got {self.start!r}")
        if not (isinstance(self.speed, int | float) and math.isfinite(self.speed) and self.speed >= 0):
            raise ValueError(f"speed must be a non-negative number of frames per second, got {self.speed!r}")
        if self.motion in (None, "staying still") and self.speed != 0:
            raise ValueError(f"a scene {'image' if self.motion is None else 'staying still'} must have speed 0")

    @property
    def is_image(self) -> bool:
        return self.motion is None

    @property
    def combo(self) -> tuple[str, str, str | None]:
        return (self.color, self.shape, self.motion)

    def center(self, t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Bounding-box centre ``(x, y)`` in frame fractions at ``t`` seconds after the first frame."""
        dx, dy = MOTION_DIRECTIONS.get(self.motion, (0, 0))
        t = np.asarray(t, dtype=np.float64)
        return self.start[0] + dx * self.speed * t, self.start[1] + dy * self.speed * t

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        d = dict(d)
        d["start"] = tuple(d["start"])
        return cls(**d)


def _generator(generator_or_seed: torch.Generator | int) -> torch.Generator:
    if isinstance(generator_or_seed, torch.Generator):
        return generator_or_seed
    if isinstance(generator_or_seed, bool) or not isinstance(generator_or_seed, int):
        raise TypeError(f"expected a torch.Generator or an int seed, got {type(generator_or_seed).__name__}")
    return torch.Generator().manual_seed(generator_or_seed)


def sample_scene(
    generator: torch.Generator | int,
    split: str = "train",
    image: bool = False,
    spec: WorldSpec | None = None,
) -> Scene:
    """Draw a scene of ``split`` from ``generator`` (or an int seed).

    Every call draws the same number of values (one combination index, one background index, four uniforms) whatever
    the branch, so a generator's state after ``n`` scenes does not depend on what they were. Video speeds are chosen
    so that the object travels ``spec.travel_range`` of the frame over ``spec.frames`` frames.
    """
    _check_split(split)
    spec = spec or WorldSpec()
    if not image and spec.frames == 1:
        raise ValueError(
            "a 1-frame WorldSpec cannot show motion: sample image scenes (image=True) or use 1 + 4k > 1 frames"
        )
    g = _generator(generator)
    if image:
        pairs = _image_pairs(split)
        color, shape = pairs[int(torch.randint(len(pairs), (1,), generator=g))]
        motion = None
    else:
        pool = combos(split)
        color, shape, motion = pool[int(torch.randint(len(pool), (1,), generator=g))]
    backgrounds = allowed_backgrounds(color)
    background = backgrounds[int(torch.randint(len(backgrounds), (1,), generator=g))]
    u = torch.rand(4, generator=g, dtype=torch.float64).tolist()
    lo, hi = spec.size_range
    size = lo + (hi - lo) * u[0]
    dx, dy = MOTION_DIRECTIONS.get(motion, (0, 0))
    moving = (dx, dy) != (0, 0)
    travel = spec.travel_range[0] + (spec.travel_range[1] - spec.travel_range[0]) * u[1] if moving else 0.0

    def axis_start(direction: int, fraction: float) -> float:
        # centre range that keeps the whole box (and the margin) inside the frame over the whole path
        low = spec.margin + size / 2 + (travel if direction < 0 else 0.0)
        high = 1 - spec.margin - size / 2 - (travel if direction > 0 else 0.0)
        return low + (high - low) * fraction

    start = (axis_start(dx, u[2]), axis_start(dy, u[3]))
    speed = travel / spec.duration if moving else 0.0
    return Scene(color, shape, motion, background, size, start, speed)


# ----------------------------------------------------------------------------------------------------------------------
# Captions

_TAG = re.compile(r"^\s*<<<t=([^>]*)s>>>")


def caption(scene: Scene) -> str:
    """``a {color} {shape} {motion} on a {background} background``; images drop the motion."""
    return _caption_text(scene.color, scene.shape, scene.motion, scene.background)


def _caption_text(color: str, shape: str, motion: str | None, background: str) -> str:
    middle = f"{color} {shape}" if motion is None else f"{color} {shape} {motion}"
    return f"a {middle} on a {background} background"


@dataclass(frozen=True)
class ParsedCaption:
    """The fields of a world caption; ``motion`` is ``None`` for an image caption, ``duration`` the tag's seconds."""

    color: str
    shape: str
    motion: str | None
    background: str
    duration: int | None = None

    @property
    def is_image(self) -> bool:
        return self.motion is None


def _alternatives(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_CAPTION = re.compile(
    rf"^an? (?P<color>{_alternatives(COLORS)}) (?P<shape>{_alternatives(SHAPES)})"
    rf"(?: (?P<motion>{_alternatives(MOTIONS)}))? on an? (?P<background>{_alternatives(BACKGROUNDS)}) background$"
)

GRAMMAR = "a {color} {shape} [{motion}] on a {background} background"


def parse_caption(text: str) -> ParsedCaption:
    """Parse a world caption, case and whitespace tolerant, with or without a leading ``<<<t=Ns>>>`` tag and a final
    period. Anything else raises one ``ValueError`` that names the grammar and every accepted word."""
    if not isinstance(text, str):
        raise TypeError(f"caption must be a str, got {type(text).__name__}")
    duration = None
    body = text
    tag = _TAG.match(body)
    if tag is not None:
        value = tag.group(1).strip()
        if not value.isdigit():
            raise ValueError(f"caption {text!r} has a malformed duration tag; expected <<<t=Ns>>> with N whole seconds")
        duration = int(value)
        body = body[tag.end() :]
    body = " ".join(body.lower().split()).rstrip(".").rstrip()
    match = _CAPTION.match(body)
    if match is None:
        raise ValueError(
            f"caption {text!r} does not follow the world grammar {GRAMMAR!r} (optionally after a <<<t=Ns>>> tag); "
            f"colors: {', '.join(COLORS)}; shapes: {', '.join(SHAPES)}; motions: {', '.join(MOTIONS)}; "
            f"backgrounds: {', '.join(BACKGROUNDS)}"
        )
    return ParsedCaption(match["color"], match["shape"], match["motion"], match["background"], duration)


def prompts(split: str = "train", n: int = 16, seed: int = 0, *, image: bool = False) -> list[str]:
    """``n`` captions of ``split``, balanced: the split's combinations in a seeded order, cycled, each with a
    background drawn from the allowed ones. Use these as evaluation prompts (they cover every combination equally)."""
    _check_split(split)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    g = _generator(seed)
    pool: tuple = _image_pairs(split) if image else combos(split)
    order = torch.randperm(len(pool), generator=g).tolist()
    out = []
    for i in range(n):
        if i and i % len(pool) == 0:
            order = torch.randperm(len(pool), generator=g).tolist()
        item = pool[order[i % len(pool)]]
        backgrounds = allowed_backgrounds(item[0])
        background = backgrounds[int(torch.randint(len(backgrounds), (1,), generator=g))]
        motion = None if image else item[2]
        out.append(_caption_text(item[0], item[1], motion, background))
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Rendering


def _check_frames(frames: object) -> int:
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1 or (frames - 1) % 4:
        raise ValueError(f"frames must be 1 + 4k (1, 5, 9, 13, 17, ...), got {frames!r}")
    return frames


def _frame_hw(size: object) -> tuple[int, int]:
    hw = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    ok = (
        isinstance(hw, tuple | list)
        and len(hw) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 16 and v % 16 == 0 for v in hw)
    )
    if not ok:
        raise ValueError(
            f"size must be an int or (height, width), each a multiple of 16 (16, 32, ..., 128), got {size!r}"
        )
    return int(hw[0]), int(hw[1])


def _signed_distance(shape: str, dx: np.ndarray, dy: np.ndarray, side: float) -> np.ndarray:
    """Signed distance in pixels (negative inside) from the bounding-box centre offsets ``dx, dy``.

    Exact inside and along edges; an approximation outside corners, which only affects the one-pixel antialiased rim.
    """
    half = side / 2
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - half
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) - half
    # triangle: apex (0, -half), base corners (+-half, half); two slanted edges with outward normals (+-2, -1) / sqrt 5
    slant = (2 * np.abs(dx) - dy - half) / math.sqrt(5)
    return np.maximum(dy - half, slant)


def render(scene: Scene, frames: int | None = None, size: int | tuple[int, int] = 128) -> torch.Tensor:
    """Render ``scene`` as uint8 frames ``[T, H, W, 3]`` (RGB).

    ``frames`` defaults to 17 for a video scene and 1 for an image scene (1 + 4k in any case); ``size`` is an int or
    ``(height, width)``, multiples of 16. Edges are antialiased over one pixel (coverage from the signed distance);
    pixels fully inside the object have exactly its palette colour and the rest exactly the background colour.
    Vectorised numpy over all frames at once.
    """
    if not isinstance(scene, Scene):
        raise TypeError(f"scene must be a Scene, got {type(scene).__name__}")
    frames = (1 if scene.is_image else 17) if frames is None else _check_frames(frames)
    h, w = _frame_hw(size)
    side = scene.size * min(h, w)  # object side in pixels
    cx, cy = scene.center(np.arange(frames) / FPS)  # [T] each, frame fractions
    cx, cy = np.asarray(cx, dtype=np.float64) * w, np.asarray(cy, dtype=np.float64) * h  # [T] pixels
    fg = np.asarray(COLORS[scene.color], dtype=np.float32)
    bg = np.asarray(BACKGROUNDS[scene.background], dtype=np.uint8)
    # Only a crop around the object changes: every frame's crop has the same size (the object's box plus a one-pixel
    # rim), so all crops are computed at once and scattered into a padded canvas (crops may hang over the edges).
    crop = math.ceil(side) + 3
    x0 = np.clip(np.floor(cx - side / 2).astype(np.int64) - 1, -crop, w)  # [T] crop origins
    y0 = np.clip(np.floor(cy - side / 2).astype(np.int64) - 1, -crop, h)
    xs = x0[:, None] + np.arange(crop)  # [T, crop] pixel columns
    ys = y0[:, None] + np.arange(crop)  # [T, crop] pixel rows
    dx = (xs + 0.5 - cx[:, None]).astype(np.float32)[:, None, :]  # [T, 1, crop]
    dy = (ys + 0.5 - cy[:, None]).astype(np.float32)[:, :, None]  # [T, crop, 1]
    dx, dy = np.broadcast_arrays(dx, dy)  # [T, crop, crop] each
    coverage = np.clip(0.5 - _signed_distance(scene.shape, dx, dy, side), 0.0, 1.0)  # [T, crop, crop]
    patch = np.rint(bg + coverage[..., None] * (fg - bg)).astype(np.uint8)  # [T, crop, crop, 3]
    canvas = np.empty((frames, h + 2 * crop, w + 2 * crop, 3), dtype=np.uint8)  # [T, H + 2c, W + 2c, 3]
    # filling row by row is memcpy-fast; broadcasting a 3-vector over the whole canvas is ~30x slower
    canvas.reshape(-1, (w + 2 * crop) * 3)[:] = np.tile(bg, w + 2 * crop)  # [T * (H + 2c), (W + 2c) * 3]
    for t in range(frames):  # T slice copies: far cheaper than one fancy-indexed scatter
        canvas[t, y0[t] + crop : y0[t] + 2 * crop, x0[t] + crop : x0[t] + 2 * crop] = patch[t]
    video = np.ascontiguousarray(canvas[:, crop : crop + h, crop : crop + w])  # [T, H, W, 3]
    return torch.from_numpy(video)


# ----------------------------------------------------------------------------------------------------------------------
# Datasets


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
    from .files import jsonl_text, write_text
    from .media import write_video

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
