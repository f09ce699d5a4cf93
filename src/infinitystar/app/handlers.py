"""What the web demo does when a person presses Generate, as plain functions over one loaded pipeline.

Separate from the page (:mod:`infinitystar.app.page`) so that generating, saving and the gallery can be tested
without gradio or a browser: the functions take and return ordinary Python values. It also holds the demo's
settings and the descriptions of what the loaded model offers (durations, guidance range, aspect ratios),
which the page shows and the checks here enforce.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infinitystar.app.checks import (
    ASPECT_RATIOS,
    AUTO_ASPECT,
    IMAGE_UPLOAD_SUFFIXES,
    MODES,
    VIDEO_UPLOAD_SUFFIXES,
    DemoInputError,
    accepted_suffixes,
    check_choice,
    check_number,
    check_prompt_text,
    check_upload,
    resolve_seed,
)
from infinitystar.generation.naming import default_filename, unique_path
from infinitystar.sizes import FPS

#: the largest LoRA scale the page offers (0 turns an adapter off; 1 is the scale it was trained at)
LORA_SCALE_MAX = 2.0

if TYPE_CHECKING:  # pragma: no cover
    from infinitystar.generation.output import GenerationResult
    from infinitystar.generation.pipeline import InfinityStarPipeline

__all__ = [
    "LORA_SCALE_MAX",
    "DemoResult",
    "DemoSettings",
    "add_to_gallery",
    "aspect_choices",
    "check_lora_scales",
    "check_request",
    "default_output_dir",
    "generate_media",
    "guidance_range",
    "max_duration",
    "model_summary",
    "save_result",
]


@dataclass(frozen=True)
class DemoSettings:
    """Limits and places of one demo server.

    ``max_upload_mb``: the largest upload accepted (checked by gradio on upload and again by
    :func:`~infinitystar.app.checks.check_upload`). ``max_duration``: the longest duration offered in seconds
    (None: twice the model's trained length, i.e. at most two windows per request). ``output_dir``: where
    results are written (None: a fresh temporary folder). ``gallery_size``: results kept in a session's
    gallery. ``queue_size``: requests that may wait for the model before new ones are refused.
    """

    max_upload_mb: float = 50.0
    max_duration: int | None = None
    output_dir: Path | None = None
    gallery_size: int = 24
    queue_size: int = 16

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_upload_mb) and self.max_upload_mb > 0):
            raise ValueError(f"max_upload_mb must be a positive number of megabytes, got {self.max_upload_mb}")
        if self.max_duration is not None and self.max_duration < 1:
            raise ValueError(f"max_duration must be at least 1 second, got {self.max_duration}")
        if self.gallery_size < 1 or self.queue_size < 1:
            raise ValueError("gallery_size and queue_size must be at least 1")
        if self.output_dir is not None:
            object.__setattr__(self, "output_dir", Path(self.output_dir))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


@dataclass(frozen=True)
class DemoResult:
    """One finished generation as the page shows it: the file, and what reproduces it."""

    path: Path
    prompt: str
    seed: int
    mode: str
    num_frames: int
    height: int
    width: int
    seconds: float
    #: a still of the result for the gallery (a video's first frame; an image is its own still)
    thumbnail: Path | None = None

    @property
    def is_image(self) -> bool:
        return self.num_frames == 1

    @property
    def caption(self) -> str:
        """The gallery caption: the seed first (it is what reproduces the result), then the prompt."""
        prompt = self.prompt if len(self.prompt) <= 80 else self.prompt[:77] + "..."
        return f"seed {self.seed} · {prompt}"

    def summary(self) -> str:
        """One markdown line under the result."""
        if self.is_image:
            what = f"image {self.width}×{self.height}"
        else:
            what = (
                f"{self.num_frames} frames ({(self.num_frames - 1) / FPS:g} s at {FPS} fps), {self.width}×{self.height}"
            )
        return f"**seed {self.seed}** · {self.mode} · {what} · generated in {self.seconds:.1f} s · `{self.path.name}`"


# --------------------------------------------------------------------------------------------
# What the loaded model offers
# --------------------------------------------------------------------------------------------


def max_duration(pipe: InfinityStarPipeline, settings: DemoSettings) -> int:
    """The longest duration the page offers: the setting, else twice the model's trained length."""
    return settings.max_duration or 2 * pipe.config.max_duration


def guidance_range(pipe: InfinityStarPipeline) -> tuple[float, float]:
    """(min, max) of the guidance-scale slider: 1 (no guidance) to twice the model's default, at least 20."""
    return 1.0, float(max(20.0, 2 * pipe.config.guidance_scale))


def aspect_choices(pipe: InfinityStarPipeline, with_auto: bool = False) -> list[tuple[str, str]]:
    """Dropdown entries (label, value): each ratio with the pixel size this model makes for it."""
    out = [("auto (from the upload)", AUTO_ASPECT)] if with_auto else []
    for ratio in ASPECT_RATIOS:
        h, w = pipe.pixel_size(ratio)
        out.append((f"{ratio} · {w}×{h}", ratio))
    return out


def model_summary(pipe: InfinityStarPipeline, settings: DemoSettings) -> str:
    """Markdown describing the loaded model: the resolution is the model's, not a choice of the page."""
    c = pipe.config
    h, w = pipe.pixel_size(c.aspect_ratio)
    return (
        f"Model: **{c.resolution}** (fixed by the loaded weights; {c.aspect_ratio} is {w}×{h} pixels), "
        f"{FPS} fps, trained on up to {c.max_duration} s per window (longer videos are generated window after "
        f"window, up to {max_duration(pipe, settings)} s here), guidance {c.guidance} (default scale "
        f"{c.guidance_scale:g}), on {pipe.device}. Uploads: images ({accepted_suffixes(IMAGE_UPLOAD_SUFFIXES)}) and "
        f"videos ({accepted_suffixes(VIDEO_UPLOAD_SUFFIXES)}) up to {settings.max_upload_mb:g} MB."
    )


# --------------------------------------------------------------------------------------------
# Generating
# --------------------------------------------------------------------------------------------


def generate_media(
    pipe: InfinityStarPipeline,
    mode: str,
    prompt: Any,
    *,
    output_dir: str | Path,
    image: Any = None,
    video: Any = None,
    duration: Any = None,
    aspect_ratio: Any = None,
    seed: Any = None,
    randomize_seed: bool = False,
    guidance_scale: Any = None,
    settings: DemoSettings | None = None,
    progress: Callable[[int, int], None] | None = None,
    lock: threading.Lock | None = None,
    lora_scales: Mapping[str, Any] | None = None,
) -> DemoResult:
    """Check the inputs of one request, generate, write the result (mp4 or png) into ``output_dir``.

    ``mode`` is one of :data:`~infinitystar.app.checks.MODES`; ``image`` / ``video`` are upload paths
    (image-to-video / continuation); ``duration`` in seconds (ignored for text-to-image; for a continuation,
    the length of the whole result including the given video); ``aspect_ratio`` one of
    :data:`~infinitystar.app.checks.ASPECT_RATIOS`, or ``'auto'`` / None (the upload's, else the model's);
    ``guidance_scale`` None for the model's. ``progress(done, total)`` is called after every scale step.
    ``lock`` serialises calls that share ``pipe``. ``lora_scales``: ``{adapter name: scale}`` for adapters the server
    loaded (``serve --lora``), set for this request only (the page's LoRA sliders). Bad inputs raise
    :class:`~infinitystar.app.checks.DemoInputError`; the pipeline's own input errors (a video too short to
    continue, ...) come through as ``DemoInputError`` with the pipeline's message.
    """
    settings = settings or DemoSettings()
    prompt, kwargs = check_request(
        pipe,
        settings,
        mode,
        prompt,
        image=image,
        video=video,
        duration=duration,
        aspect_ratio=aspect_ratio,
        seed=seed,
        randomize_seed=randomize_seed,
        guidance_scale=guidance_scale,
    )
    scales = check_lora_scales(pipe, lora_scales)
    t0 = time.perf_counter()
    result = _run_pipeline(pipe, prompt, kwargs, progress, lock, scales)
    return save_result(result, output_dir, time.perf_counter() - t0)


def check_request(
    pipe: InfinityStarPipeline,
    settings: DemoSettings,
    mode: Any,
    prompt: Any,
    *,
    image: Any,
    video: Any,
    duration: Any,
    aspect_ratio: Any,
    seed: Any,
    randomize_seed: bool,
    guidance_scale: Any,
) -> tuple[str, dict[str, Any]]:
    """Check every input of one request (see :func:`generate_media`): (prompt, the pipeline's keyword arguments).

    All checks run before the model is touched, so a bad request costs nothing and its message names the
    first wrong input in the order the page shows them.
    """
    mode = check_choice(mode, MODES, "mode")
    prompt = check_prompt_text(prompt)
    seed_value = resolve_seed(seed, randomize_seed)
    limit = max_duration(pipe, settings)
    seconds = 0 if mode == "text-to-image" else int(round(check_number(duration, "duration (seconds)", 1, limit)))
    if aspect_ratio in (None, "", AUTO_ASPECT):
        aspect = None
    else:
        aspect = check_choice(aspect_ratio, ASPECT_RATIOS, "aspect ratio")
    low, high = guidance_range(pipe)
    scale = None if guidance_scale is None else check_number(guidance_scale, "guidance scale", low, high)
    kwargs: dict[str, Any] = {}
    if mode == "image-to-video":
        kwargs["image"] = str(check_upload(image, "image", settings.max_upload_bytes))
    elif mode == "continuation":
        kwargs["video"] = str(check_upload(video, "video", settings.max_upload_bytes))
    if aspect is None and not kwargs:  # nothing uploaded to take the aspect ratio from: the model's default
        aspect = pipe.config.aspect_ratio
    kwargs.update(duration=seconds, aspect_ratio=aspect, seed=seed_value, guidance_scale=scale)
    return prompt, kwargs


def check_lora_scales(pipe: InfinityStarPipeline, values: Mapping[str, Any] | None) -> dict[str, float]:
    """``{adapter: scale}`` checked against the adapters the server loaded; each scale in [0, LORA_SCALE_MAX]."""
    loaded = pipe.lora_adapters
    out = {}
    for name, value in (values or {}).items():
        if name not in loaded:
            raise DemoInputError(f"no LoRA adapter {name!r} is loaded; loaded: {', '.join(loaded) or 'none'}")
        out[name] = check_number(value, f"scale of LoRA {name!r}", 0.0, LORA_SCALE_MAX)
    return out


def _run_pipeline(
    pipe: InfinityStarPipeline,
    prompt: str,
    kwargs: dict[str, Any],
    progress: Callable[[int, int], None] | None,
    lock: threading.Lock | None,
    lora_scales: Mapping[str, float] | None = None,
) -> GenerationResult:
    """Generate under ``lock`` (with this request's LoRA scales, put back afterwards); the pipeline's input errors
    become :class:`DemoInputError` (their message is for the person at the page), anything else propagates."""

    def callback(done: int, total: int, record: Any) -> None:
        if progress is not None:
            progress(done, total)

    try:
        with lock if lock is not None else contextlib.nullcontext():
            before = pipe.lora_adapters
            try:
                for name, scale in (lora_scales or {}).items():
                    pipe.set_lora_scale(scale, name=name)
                return pipe(prompt, callback=callback, output_type="np", progress=False, **kwargs)
            finally:
                for name in lora_scales or {}:
                    pipe.set_lora_scale(before[name], name=name)
    except ValueError as exc:  # the pipeline's input checks: their message is for the user
        raise DemoInputError(str(exc)) from exc


def save_result(result: GenerationResult, output_dir: str | Path, seconds: float) -> DemoResult:
    """Write a pipeline result as ``{slug}_seed{seed}.mp4`` (H.264) or ``.png`` and describe it."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    frames = result.frames  # uint8 [T, H, W, 3]
    path = unique_path(folder, default_filename(result.prompt, result.seed, result.is_image))
    try:
        result.save(path)
        thumbnail = path if result.is_image else _write_thumbnail(frames[0], folder / THUMBNAILS / f"{path.stem}.jpg")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    t, h, w = (int(v) for v in frames.shape[:3])
    return DemoResult(path, result.prompt, int(result.seed), result.mode, t, h, w, seconds, thumbnail)


#: the sub-folder of the output folder that holds the gallery's stills of videos
THUMBNAILS = "thumbnails"


def _write_thumbnail(frame, path: Path) -> Path:
    """A video's first frame as a JPEG still: the gallery shows it instead of a grey video icon."""
    from PIL import Image

    from infinitystar.files import atomic_write

    image = Image.fromarray(frame)
    return atomic_write(path, lambda tmp: image.save(tmp, format="JPEG", quality=90))


def add_to_gallery(gallery: list | None, result: DemoResult, limit: int) -> list[tuple[str, str]]:
    """The session's gallery with ``result`` first, as gradio's (still, caption) pairs, at most ``limit`` long."""
    still = result.thumbnail or result.path
    items = [(str(still), result.caption)] + [tuple(item) for item in (gallery or [])]
    return items[:limit]


def default_output_dir() -> Path:
    """A fresh temporary folder for a server started without ``--output-dir`` (results outlive the session)."""
    return Path(tempfile.mkdtemp(prefix="infinitystar-demo-"))
