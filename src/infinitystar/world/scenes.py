"""The procedural world's vocabulary and scenes: what can be shown, which combinations each split holds, and how a
scene is drawn.

A video of the world shows ONE object (8 colours x 3 shapes) on a plain background (3 colours, never close to the
object's colour), doing one of 5 motions, for ``1 + 4k`` frames (17 by default, one second at 16 fps) at a size that
is a multiple of 16 (128 x 128 by default). Objects span 34-48 % of the frame (3-4 latent tokens of the 16x VAE, so
that their shape survives tokenization); moving ones travel 22-40 % of the frame over the clip and stay fully inside
it; still objects do not move at all.

Split: :data:`HELDOUT_COMBOS` holds out 18 of the 120 colour-shape-motion combinations (15 %) from training, chosen
so that every colour, shape and motion, and every colour-shape, colour-motion and shape-motion pair, still appears in
training. Held-out prompts therefore measure compositional generalisation only: the model has seen every word and
every pair of words, never that triple.

Why a module of its own: this is the one definition of the world that everything else reads. Captions
(:mod:`infinitystar.world.captions`), rendering (:mod:`infinitystar.world.render`), datasets
(:mod:`infinitystar.world.dataset`) and the evaluator (:mod:`infinitystar.world.analysis`) all build on it, and it
depends on none of them, so the vocabulary and the split can be imported without pulling in rendering or file writing.

Everything is deterministic: a scene is drawn from an explicit ``torch.Generator`` (or an int seed), so the same
seed gives the same scene on every machine.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from infinitystar.sizes import FPS

__all__ = [
    "ALL_COLORS",
    "ALL_COMBOS",
    "BACKGROUNDS",
    "COLORS",
    "HELDOUT_COMBOS",
    "MIN_BACKGROUND_DISTANCE",
    "MOTIONS",
    "MOTION_DIRECTIONS",
    "NEW_COLORS",
    "NEW_COLOR_HELDOUT",
    "SHAPES",
    "SPLITS",
    "TRAIN_COMBOS",
    "Scene",
    "WorldSpec",
    "allowed_backgrounds",
    "check_colors",
    "combos",
    "is_held_out",
    "sample_scene",
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

NEW_COLORS: dict[str, tuple[int, int, int]] = {
    "pink": (255, 105, 180),
}
"""Object colours outside the default world, which the built-in model never saw (its text encoder has a vector for
each word, unused in its training): drawn, captioned and evaluated only when asked for (``WorldSpec(colors=...)``,
``--colors``), so that the default world stays byte for byte what it was. Pink is >= 135 RGB units from every colour
of :data:`COLORS` and >= 139 from every background."""

ALL_COLORS: dict[str, tuple[int, int, int]] = {**COLORS, **NEW_COLORS}
"""Every colour a scene may have."""

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

NEW_COLOR_HELDOUT: dict[str, frozenset[tuple[str, str]]] = {
    "pink": frozenset(
        {
            ("circle", "moving left"),
            ("circle", "staying still"),
            ("square", "moving down"),
            ("triangle", "moving up"),
            ("triangle", "moving right"),
        }
    ),
}
"""Shape-motion pairs held out for each new colour (5 of 15: every motion once, every shape once or twice), so that
an adapter taught the colour on the other 10 is measured on combinations it never saw in that colour. Every shape
and every motion still appears with the colour in training (each shape with 3-4 motions, each motion with 2 shapes).
"""


def check_colors(colors: object) -> tuple[str, ...] | None:
    """``colors`` as a tuple of known colour names (``None``: the default world's eight), checked."""
    if colors is None:
        return None
    if isinstance(colors, str) or not isinstance(colors, (tuple, list)) or not colors:
        raise ValueError(f"colors must be a non-empty list of colour names, got {colors!r}")
    for c in colors:
        _check_choice("color", c, ALL_COLORS)
    if len(set(colors)) != len(colors):
        raise ValueError(f"colors repeats a colour: {list(colors)}")
    return tuple(colors)


def is_held_out(combo: tuple[str, str, str]) -> bool:
    """Whether a colour-shape-motion combination is held out of training (its colour's own split for a new one)."""
    color, shape, motion = combo
    if color in NEW_COLOR_HELDOUT:
        return (shape, motion) in NEW_COLOR_HELDOUT[color]
    return combo in HELDOUT_COMBOS


def combos(split: str, colors: tuple[str, ...] | None = None) -> tuple[tuple[str, str, str], ...]:
    """The colour-shape-motion combinations of ``split`` (``"train"`` or ``"heldout"``), in a fixed order.

    ``colors``: the colours to draw from (default: the eight of :data:`COLORS`, the default world); a colour of
    :data:`NEW_COLORS` brings its own split (:data:`NEW_COLOR_HELDOUT`)."""
    _check_split(split)
    if colors is None:
        return TRAIN_COMBOS if split == "train" else tuple(c for c in ALL_COMBOS if c in HELDOUT_COMBOS)
    pool = tuple((c, s, m) for c in check_colors(colors) for s in SHAPES for m in MOTIONS)
    return tuple(c for c in pool if is_held_out(c) == (split == "heldout"))


def _image_pairs(split: str, colors: tuple[str, ...] | None = None) -> tuple[tuple[str, str], ...]:
    """Colour-shape pairs for image scenes of ``split``.

    Images have no motion, and every colour-shape pair appears in training videos by construction, so the held-out
    image pairs are those of the held-out triples: they test image generation on the same objects, not composition.
    """
    seen: dict[tuple[str, str], None] = {}
    for c, s, _ in combos(split, colors):
        seen.setdefault((c, s))
    return tuple(seen)


def allowed_backgrounds(color: str) -> tuple[str, ...]:
    """Backgrounds that are at least :data:`MIN_BACKGROUND_DISTANCE` away from object colour ``color``."""
    _check_choice("color", color, ALL_COLORS)
    return tuple(b for b, rgb in BACKGROUNDS.items() if math.dist(rgb, ALL_COLORS[color]) >= MIN_BACKGROUND_DISTANCE)


def _check_choice(what: str, value: object, accepted) -> None:
    if value not in accepted:
        raise ValueError(f"unknown {what} {value!r}; accepted: {', '.join(accepted)}")


def _check_split(split: object) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")


def _check_frames(frames: object) -> int:
    """``frames`` if it is a valid clip length (``1 + 4k``), else a ``ValueError`` listing the accepted values."""
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1 or (frames - 1) % 4:
        raise ValueError(f"frames must be 1 + 4k (1, 5, 9, 13, 17, ...), got {frames!r}")
    return frames


def _frame_hw(size: object) -> tuple[int, int]:
    """``(height, width)`` of an int or pair ``size``, each a multiple of 16 (one latent token of the 16x VAE).

    Shared by :class:`WorldSpec` and :func:`infinitystar.world.render.render`, so both reject the same sizes.
    """
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
    colors: tuple[str, ...] | None = None  #: object colours to draw from (None: the default world's eight)

    def __post_init__(self) -> None:
        object.__setattr__(self, "colors", check_colors(self.colors))
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
    def with_ranges(cls, frames: int, size, size_range=None, travel_range=None, colors=None) -> WorldSpec:
        """A spec whose ranges and colours fall back to the defaults where ``None`` (a recipe or flag leaving them
        unset)."""
        given = {"size_range": size_range, "travel_range": travel_range, "colors": colors}
        return cls(frames=frames, size=size, **{k: tuple(v) for k, v in given.items() if v is not None})

    @property
    def duration(self) -> float:
        """Seconds from the first to the last frame at 16 fps (1.0 for 17 frames)."""
        return (self.frames - 1) / FPS


@dataclass(frozen=True)
class Scene:
    """One object on a plain background; everything needed to render and caption a video (or an image).

    Attributes:
        color: object colour, a key of :data:`COLORS` (or of :data:`NEW_COLORS`).
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
        _check_choice("color", self.color, ALL_COLORS)
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
    """A given generator as is (so successive draws continue its stream), or a fresh one seeded with an int."""
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
        pairs = _image_pairs(split, spec.colors)
        color, shape = pairs[int(torch.randint(len(pairs), (1,), generator=g))]
        motion = None
    else:
        pool = combos(split, spec.colors)
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
