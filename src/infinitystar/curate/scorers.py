"""Frame scorers: the plug-in interface for quality filters, the cheap built-in ones, and their registry.

A scorer looks at a few frames sampled evenly from a clip (uint8 ``[T, H, W, 3]`` RGB, shorter side
``sample_size``; an image is ``T = 1``) and returns one number. The clip is kept when the number is on the right
side of the threshold:

- ``direction = "min"``: keep when ``score >= threshold`` (e.g. sharpness, brightness, aesthetics);
- ``direction = "max"``: keep when ``score <= threshold`` (e.g. share of black frames, text area, watermark
  probability);
- ``threshold = None``: measure and record only, never drop.

Writing a scorer (for example an OCR text-area or a watermark classifier)::

    class TextArea:                      # no base class needed: any object with these members
        name = "text_area"
        direction = "max"
        kinds = ("video", "image")       # optional: what it applies to (default both)

        def __init__(self, weights: str, threshold: float = 0.05):
            self.threshold = threshold
            self.model = load_my_detector(weights)    # LOCAL weights only: curation never downloads

        def score(self, frames: np.ndarray) -> float:  # uint8 [T, H, W, 3]
            return mean_text_box_area_fraction(self.model, frames)

Use it with ``--scorer "my_pkg.scorers:TextArea,weights=/models/ocr.pt,threshold=0.03"`` (a dotted path, with
``:`` or ``.`` before the class), or register it for a short name with an entry point in the group
``infinitystar.curate_scorers`` (``text_area = "my_pkg.scorers:TextArea"``) and write ``--scorer text_area``.
Options after the name are ``key=value`` pairs passed to the constructor (values parsed as JSON when they can be:
numbers, ``true``, ``null``; otherwise strings); ``threshold=`` and ``direction=`` override the scorer's own.
Scorers are built once per worker process, so a model is loaded once per worker.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from infinitystar.curate.scenes import luma

ENTRY_POINT_GROUP = "infinitystar.curate_scorers"
DIRECTIONS = ("min", "max")


@runtime_checkable
class Scorer(Protocol):
    """What a frame scorer provides (see the module docstring)."""

    name: str
    threshold: float | None
    direction: str

    def score(self, frames: np.ndarray) -> float: ...


# --------------------------------------------------------------------------------------------
# Built-in scorers (numpy only)
# --------------------------------------------------------------------------------------------


@dataclass
class BrightnessScorer:
    """Mean luma of the frames in [0, 1]; drops dark clips (night shots with nothing visible, fades to black)."""

    threshold: float | None = 0.1
    direction: str = "min"
    name: str = "brightness"

    def score(self, frames: np.ndarray) -> float:
        return float(luma(frames).mean()) / 255.0


@dataclass
class BlackFramesScorer:
    """Share of frames that are blank: almost black (mean luma below ``black_level``) or one flat colour
    (luma standard deviation below ``flat_std``), both in [0, 1] units. Drops clips that are mostly title cards,
    black gaps or fades."""

    threshold: float | None = 0.5
    direction: str = "max"
    black_level: float = 0.06
    flat_std: float = 0.02
    name: str = "black_frames"

    def score(self, frames: np.ndarray) -> float:
        y = luma(frames).reshape(frames.shape[0], -1) / 255.0  # [T, H, W] -> [T, H*W]
        blank = (y.mean(axis=1) < self.black_level) | (y.std(axis=1) < self.flat_std)
        return float(blank.mean())


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of a float ``[h, w]`` image: high for sharp detail, ~0 for blur."""
    if gray.shape[0] < 3 or gray.shape[1] < 3:
        return 0.0
    lap = gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4 * gray[1:-1, 1:-1]
    return float(lap.var())


@dataclass
class BlurScorer:
    """Mean variance of the Laplacian of the frames' luma (0..255 scale) at the sampling size.

    The value depends on content and resolution; the default threshold (15 at a 256-pixel shorter side) only
    drops very blurry or blank frames. Raise it for stricter sharpness."""

    threshold: float | None = 15.0
    direction: str = "min"
    name: str = "blur"

    def score(self, frames: np.ndarray) -> float:
        return float(np.mean([laplacian_variance(luma(f)) for f in frames]))


# --------------------------------------------------------------------------------------------
# A model-based scorer: CLIP embedding + linear aesthetic head, from local files
# --------------------------------------------------------------------------------------------


class ClipAestheticScorer:
    """Aesthetic score from a local CLIP model and a local head: mean over frames of
    ``head(normalize(clip_image_embedding))``.

    ``clip``: a ``transformers`` CLIP folder (``CLIPModel`` weights + preprocessor config).
    ``head``: a ``.safetensors`` / ``.pt`` state dict of a chain of ``nn.Linear`` layers without activations,
    applied in the order of their layer index (keys like ``weight``/``bias`` for one layer, or
    ``layers.0.weight``, ``layers.2.weight``, ...); the LAION aesthetic heads for CLIP ViT-L/14 have this form.
    The default threshold 4.5 is for heads that predict a 1-10 rating.
    """

    name = "aesthetic"

    def __init__(
        self,
        clip: str,
        head: str,
        threshold: float | None = 4.5,
        direction: str = "min",
        device: str = "cpu",
        batch_size: int = 16,
    ) -> None:
        from pathlib import Path

        import torch
        from transformers import AutoImageProcessor, CLIPModel

        self.threshold, self.direction = threshold, direction
        folder = Path(clip)
        if not (folder / "config.json").is_file():
            raise ValueError(f"aesthetic scorer: CLIP folder not found or without config.json: {folder}")
        self.device, self.batch_size = torch.device(device), batch_size
        self.model = CLIPModel.from_pretrained(folder, local_files_only=True).to(self.device).eval()
        self.processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        self.layers = _linear_chain(head)
        width = self.model.config.projection_dim
        if self.layers[0][0].shape[1] != width or self.layers[-1][0].shape[0] != 1:
            shapes = [tuple(w.shape) for w, _ in self.layers]
            raise ValueError(f"aesthetic head {head} must map {width} -> 1 (the CLIP embedding size); got {shapes}")

    def embed(self, frames: np.ndarray):
        """L2-normalised CLIP image embeddings ``[T, D]`` of uint8 frames ``[T, H, W, 3]``."""
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(frames), self.batch_size):
                pixels = self.processor(images=list(frames[i : i + self.batch_size]), return_tensors="pt")
                feats = self.model.get_image_features(pixel_values=pixels["pixel_values"].to(self.device))
                feats = feats if isinstance(feats, torch.Tensor) else feats.pooler_output  # transformers 4 / 5
                out.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(out)

    def score(self, frames: np.ndarray) -> float:
        x = self.embed(frames)
        for weight, bias in self.layers:
            x = x @ weight.T + (bias if bias is not None else 0)
        return float(x[:, 0].mean())


def _linear_chain(path: str) -> list[tuple[Any, Any]]:
    """``[(weight [out, in], bias [out] or None), ...]`` from a state dict of linear layers, in layer order."""
    import re
    from pathlib import Path

    from infinitystar.checkpoints import read_safetensors, torch_load_weights

    path_ = Path(path)
    state = read_safetensors(path_) if path_.suffix == ".safetensors" else torch_load_weights(path_)
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    prefixes = sorted(
        {k[: -len("weight")] for k in state if k.endswith("weight")},
        key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p)],
    )
    if not prefixes:
        raise ValueError(f"aesthetic head {path}: no '*weight' tensors; expected linear layers")
    layers = []
    for p in prefixes:
        w = state[p + "weight"].float()
        if w.ndim != 2:
            raise ValueError(f"aesthetic head {path}: {p}weight is not a linear layer weight {tuple(w.shape)}")
        b = state.get(p + "bias")
        layers.append((w, None if b is None else b.float()))
    for (w1, _), (w2, _) in zip(layers[:-1], layers[1:]):
        if w2.shape[1] != w1.shape[0]:
            raise ValueError(
                f"aesthetic head {path}: layer sizes do not chain ({tuple(w1.shape)} -> {tuple(w2.shape)})"
            )
    return layers


BUILTIN_SCORERS: dict[str, Callable[..., Any]] = {
    "brightness": BrightnessScorer,
    "black_frames": BlackFramesScorer,
    "blur": BlurScorer,
    "aesthetic": ClipAestheticScorer,
}
DEFAULT_SCORERS = ("brightness", "black_frames", "blur")


# --------------------------------------------------------------------------------------------
# Specs, registry, construction
# --------------------------------------------------------------------------------------------

_UNSET = "unset"


@dataclass(frozen=True)
class ScorerSpec:
    """How to build one scorer: ``target`` (a registered name or a dotted path) and constructor options.

    Plain data (picklable, JSON-able): it is sent to worker processes and stored in the resume state.
    ``threshold`` / ``direction`` override the scorer's own when set (``threshold=None`` means record only).
    """

    target: str
    options: tuple[tuple[str, Any], ...] = ()
    threshold: float | None | str = _UNSET
    direction: str | None = None

    def to_json(self) -> dict:
        return {
            "target": self.target,
            "options": dict(self.options),
            "threshold": self.threshold,
            "direction": self.direction,
        }


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_scorer_spec(text: str) -> ScorerSpec:
    """``"NAME_OR_DOTTED_PATH[,key=value,...]"`` -> ``ScorerSpec`` (see the module docstring)."""
    parts = [p.strip() for p in text.split(",")]
    target, options, threshold, direction = parts[0], [], _UNSET, None
    if not target:
        raise ValueError(f"scorer spec {text!r} has no name; expected NAME or package.module:Class, then key=value")
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"scorer spec {text!r}: {part!r} is not key=value")
        if key == "threshold":
            if value.strip().lower() in ("none", "null", "off"):
                threshold = None
            else:
                try:
                    threshold = float(value)
                except ValueError:
                    raise ValueError(f"scorer spec {text!r}: threshold must be a number or none") from None
        elif key == "direction":
            if value not in DIRECTIONS:
                raise ValueError(f"scorer spec {text!r}: direction must be one of {DIRECTIONS}, got {value!r}")
            direction = value
        else:
            options.append((key, _parse_value(value)))
    return ScorerSpec(target, tuple(options), threshold, direction)


def _import_dotted(target: str) -> Any:
    module_name, sep, attr = target.partition(":")
    if not sep:
        module_name, _, attr = target.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"{target!r} is not a dotted path (package.module:Class or package.module.Class)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} for {target!r}: {exc}") from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{module_name!r} has no attribute {attr!r} (from {target!r})")
        obj = getattr(obj, part)
    return obj


def resolve_factory(
    target: str, registry: dict[str, Callable[..., Any]], group: str, what: str = "scorer"
) -> Callable[..., Any]:
    """A built-in name, then an entry point of ``group``, then a dotted path -> the class or factory."""
    if target in registry:
        return registry[target]
    from importlib.metadata import entry_points

    for ep in entry_points(group=group):
        if ep.name == target:
            return ep.load()
    if "." in target or ":" in target:
        return _import_dotted(target)
    known = ", ".join(sorted(registry)) or "none"
    raise ValueError(
        f"unknown {what} {target!r}; built-in: {known}; or an entry point of the group "
        f"{group!r}, or a dotted path package.module:Class"
    )


@dataclass
class ScoreFilter:
    """A built scorer with the threshold and direction that decide."""

    scorer: Any
    name: str
    threshold: float | None
    direction: str
    kinds: tuple[str, ...] = field(default=("video", "image"))

    def applies_to(self, kind: str) -> bool:
        return kind in self.kinds

    def evaluate(self, frames: np.ndarray) -> tuple[float, bool]:
        """``(score, keep)``. A non-finite score is an error naming the scorer (a broken plug-in must not pass
        or drop clips silently)."""
        value = float(self.scorer.score(frames))
        if not math.isfinite(value):
            raise ValueError(f"scorer {self.name!r} returned {value}; scores must be finite numbers")
        if self.threshold is None:
            return value, True
        keep = value >= self.threshold if self.direction == "min" else value <= self.threshold
        return value, keep

    def describe(self, value: float) -> str:
        op = "<" if self.direction == "min" else ">"
        return f"{self.name} {value:.4g} {op} {self.threshold:g}"


def build_scorer(spec: ScorerSpec) -> ScoreFilter:
    """Construct a scorer from its spec and check that it has the members the interface needs."""
    factory = resolve_factory(spec.target, BUILTIN_SCORERS, ENTRY_POINT_GROUP)
    try:
        scorer = factory(**dict(spec.options))
    except TypeError as exc:
        raise ValueError(f"cannot build scorer {spec.target!r} with options {dict(spec.options)}: {exc}") from exc
    missing = [m for m in ("name", "score") if not hasattr(scorer, m)]
    if missing:
        raise ValueError(
            f"scorer {spec.target!r} lacks {missing}; a scorer needs name, score(frames), threshold, direction"
        )
    threshold = getattr(scorer, "threshold", None) if spec.threshold == _UNSET else spec.threshold
    direction = spec.direction or getattr(scorer, "direction", "min")
    if direction not in DIRECTIONS:
        raise ValueError(f"scorer {scorer.name!r} has direction {direction!r}; accepted: {DIRECTIONS}")
    if threshold is not None and not math.isfinite(float(threshold)):
        raise ValueError(f"scorer {scorer.name!r} has a non-finite threshold {threshold!r}")
    kinds = tuple(getattr(scorer, "kinds", ("video", "image")))
    return ScoreFilter(scorer, str(scorer.name), None if threshold is None else float(threshold), direction, kinds)


def check_scorer_specs(specs: tuple[ScorerSpec, ...]) -> None:
    """Resolve every target now (cheap: an import), so a typo fails before any worker starts; names are unique."""
    names = set()
    for spec in specs:
        resolve_factory(spec.target, BUILTIN_SCORERS, ENTRY_POINT_GROUP)
        if spec.target in names:
            raise ValueError(f"scorer {spec.target!r} given twice")
        names.add(spec.target)


def merge_scorer_specs(defaults: tuple[str, ...], given: list[ScorerSpec]) -> tuple[ScorerSpec, ...]:
    """The default scorers (by name) with the given specs added; a given spec for a default name replaces it."""
    given_targets = {s.target for s in given}
    return tuple(ScorerSpec(name) for name in defaults if name not in given_targets) + tuple(given)
