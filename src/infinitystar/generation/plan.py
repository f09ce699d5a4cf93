"""Planning a generation: the settings a model folder implies, durations, and the windows of a long video.

Every mode is the same loop over *windows*: a window is one run of the scale-by-scale generation over the model's
trained length, optionally teacher-forced with the bits of frames that already exist. Text-to-image and
text-to-video are one window without context; image-to-video forces the image pyramid with the encoded image; video
continuation forces whole clips of the given video; a long video is window after window, each forced with the tail of
the video so far. Everything here is a pure function of its arguments."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from infinitystar import config_dicts

#: where the built-in default model lives inside the package (trained by the project)
from infinitystar.generation.loop import SamplingOptions
from infinitystar.generation.ranges import check_guidance_scale, check_temperatures
from infinitystar.generation.sampling import GUIDANCE_METHODS, Guidance
from infinitystar.schedule import Schedule, build_schedule
from infinitystar.sizes import (
    FPS,
    PN_NUM_SCALES,
    RESOLUTIONS,
    TEMPORAL_COMPRESSION,
    nearest_template,
    parse_aspect_ratio,
)
from infinitystar.text.prompts import check_prompt, decorate_prompt

# --------------------------------------------------------------------------------------------
# Configuration: what a model was trained for and how it samples by default
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineConfig:
    """Generation settings that belong to a model (saved in ``model_index.json``).

    ``resolution``: the pixel budget the model was trained at ('480p', '720p' or a budget name
    such as '0.016M'); the aspect-ratio templates give the sizes. ``frames_per_clip``: latent
    frames of one video clip (20 = 5 s for the released models). ``max_duration``: the longest
    video (whole seconds) one window covers; longer videos are generated window after window.
    The rest are sampling defaults a call can override.
    """

    resolution: str = "480p"
    max_duration: int = 5
    default_duration: int = 5
    frames_per_clip: int = 20
    image_repetition: tuple[int, ...] | None = None
    video_repetition: tuple[int, ...] | None = None
    detail_scale_min_tokens: int | None = None
    aspect_ratio: str = "16:9"
    guidance: str = "apg"
    guidance_scale: float = 34.0
    apg_norm_threshold: float = 0.05
    tau_image: float = 1.0
    tau_video: float = 0.4
    prompt_suffix: str | None = None
    #: encode references by sampling the VAE posterior (the original) rather than its mean
    sample_posterior: bool = True

    def __post_init__(self) -> None:
        accepted = sorted(RESOLUTIONS) + sorted(PN_NUM_SCALES)
        if self.resolution not in accepted:
            raise ValueError(f"unknown resolution {self.resolution!r}; accepted: {', '.join(accepted)}")
        if self.guidance not in GUIDANCE_METHODS:
            raise ValueError(f"unknown guidance {self.guidance!r}; accepted: {', '.join(GUIDANCE_METHODS)}")
        if self.frames_per_clip < 1 or self.max_duration < 1 or self.default_duration < 0:
            raise ValueError("frames_per_clip and max_duration must be >= 1, default_duration >= 0")
        if (FPS * self.max_duration) % (TEMPORAL_COMPRESSION * self.frames_per_clip):
            raise ValueError(
                f"max_duration {self.max_duration} s must be a whole number of clips of "
                f"{self.frames_per_clip} latent frames ({self.clip_seconds:g} s each)"
            )
        for name in ("image_repetition", "video_repetition"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(int(v) for v in value))

    @property
    def clip_seconds(self) -> float:
        return TEMPORAL_COMPRESSION * self.frames_per_clip / FPS

    @property
    def max_frames(self) -> int:
        """Video frames of one full window: 16 * max_duration + 1."""
        return FPS * self.max_duration + 1

    @property
    def clips_per_window(self) -> int:
        return FPS * self.max_duration // (TEMPORAL_COMPRESSION * self.frames_per_clip)

    def schedule(self, h_div_w: float, num_latent_frames: int) -> Schedule:
        """The schedule of one window: this model's resolution and repetitions, the template of ``h_div_w`` (what the
        pipeline runs and what the CLI's checks size outputs with)."""
        return build_schedule(
            h_div_w,
            self.resolution,
            num_latent_frames,
            image_repetition=self.image_repetition,
            video_repetition=self.video_repetition,
            detail_scale_min_tokens=self.detail_scale_min_tokens,
            frames_per_clip=self.frames_per_clip,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PipelineConfig:
        """From ``model_index.json``'s ``pipeline`` entry; unknown keys and wrong types are errors that name them."""
        return config_dicts.from_dict(cls, d)


#: the released models: the 480p one was trained up to 10 s, the 720p one up to 5 s
RELEASED_CONFIGS: dict[str, PipelineConfig] = {
    "480p": PipelineConfig("480p", max_duration=10),
    "720p": PipelineConfig("720p", max_duration=5),
}


# --------------------------------------------------------------------------------------------
# Planning: durations and windows (pure functions)
# --------------------------------------------------------------------------------------------


def resolve_duration(duration: float | None, config: PipelineConfig) -> int:
    """Whole seconds to generate (0 = an image); snaps other values with a warning.

    The model was trained on whole seconds (the ``<<<t=Ns>>>`` tag), so 4.6 s becomes 5 s.
    Durations beyond ``config.max_duration`` are allowed: they are generated window by window.
    """
    if duration is None:
        return config.default_duration
    if isinstance(duration, bool) or not isinstance(duration, (int, float)):
        raise TypeError(f"duration must be a number of seconds (0 for an image), got {type(duration).__name__}")
    if not math.isfinite(duration) or duration < 0:
        raise ValueError(f"duration must be 0 (an image) or a positive number of seconds, got {duration!r}")
    if duration == 0:
        return 0
    seconds = max(1, round(duration))
    if seconds != duration:
        warnings.warn(f"duration {duration} s snapped to {seconds} s (the model works in whole seconds)", stacklevel=3)
    limit = 60 * 60
    if seconds > limit:
        raise ValueError(f"duration {seconds} s is longer than the {limit} s this pipeline accepts")
    return seconds


@dataclass(frozen=True)
class Window:
    """One generation run: ``context_frames`` existing frames are teacher-forced (0 = none),
    ``new_frames`` frames are generated after them."""

    context_frames: int
    new_frames: int

    @property
    def frames(self) -> int:
        return self.context_frames + self.new_frames


def plan_windows(given_frames: int, target_frames: int, config: PipelineConfig) -> list[Window]:
    """Cut a generation of ``target_frames`` frames, of which ``given_frames`` exist, into windows.

    A window never exceeds the trained length (``config.max_frames``). Its context is the last
    ``1 + whole clips`` frames that exist: the first of them is encoded as an image (the causal
    VAE encodes a first frame alone) and the rest as whole clips, which is how the model saw
    videos in training; at most ``clips_per_window - 1`` clips, so that at least one clip is new.
    """
    clip = TEMPORAL_COMPRESSION * config.frames_per_clip  # video frames of one clip
    for name, n in (("given_frames", given_frames), ("target_frames", target_frames)):
        if n < 0 or (n > 0 and (n - 1) % TEMPORAL_COMPRESSION):
            raise ValueError(f"{name} must be 0 or 1 + 4k, got {n}")
    if target_frames <= given_frames:
        raise ValueError(f"nothing to generate: {given_frames} frames given, {target_frames} asked for")
    windows, n = [], given_frames
    while n < target_frames:
        if n == 0:
            w = Window(0, min(target_frames, config.max_frames))
        else:
            clips = min(config.clips_per_window - 1, (n - 1) // clip)
            context = 1 + clip * clips
            w = Window(context, min(target_frames - n, config.max_frames - context))
        windows.append(w)
        n += w.new_frames
    return windows


# --------------------------------------------------------------------------------------------
# One call, planned: everything that can be checked before any model runs
# --------------------------------------------------------------------------------------------

OUTPUT_TYPES = ("np", "pt", "latent")


@dataclass(frozen=True)
class Request:
    """A validated generation request: prompts, mode, length and aspect, before any input is decoded.

    ``mode``: 'text-to-image', 'text-to-video', 'long video', 'image-to-video' or 'continuation'.
    ``target_frames``: frames of the finished output (16 per second + 1; 1 for an image).
    """

    prompts: tuple[str, ...]
    mode: str
    seconds: int
    target_frames: int
    h_div_w: float  #: the aspect template (h / w)
    output_type: str


def plan_request(
    config: PipelineConfig,
    prompts: Sequence[str],
    *,
    image: Any = None,
    video: Any = None,
    duration: float | None = None,
    resolution: str | None = None,
    aspect_ratio: str | float | None = None,
    output_type: str = "np",
) -> Request:
    """Check a call's arguments against the model's settings and plan it (reads input headers, nothing else).

    The aspect ratio is the one asked for, else the input's (image or video), else the model's default; it is
    snapped to the nearest trained template.
    """
    from infinitystar.generation.inputs import input_aspect

    prompts = tuple(check_prompt(p) for p in prompts)
    if not prompts:
        raise ValueError("prompt is empty: give a prompt (or a list of prompts, one per window)")
    if image is not None and video is not None:
        raise ValueError("give image= (image-to-video) or video= (continuation), not both")
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"unknown output_type {output_type!r}; accepted: {', '.join(OUTPUT_TYPES)}")
    if resolution is not None and resolution != config.resolution:
        raise ValueError(
            f"this model generates {config.resolution}; resolution={resolution!r} needs other weights "
            f"(load them with from_pretrained(..., resolution={resolution!r}))"
        )
    seconds = resolve_duration(duration, config)
    if seconds == 0 and (image is not None or video is not None):
        raise ValueError("duration=0 asks for an image; with image= or video= give a video duration (>= 1 s)")
    if aspect_ratio is not None:
        h_div_w = parse_aspect_ratio(aspect_ratio)
    elif image is not None:
        h_div_w = input_aspect(image, "image")
    elif video is not None:
        h_div_w = input_aspect(video, "video")
    else:
        h_div_w = parse_aspect_ratio(config.aspect_ratio)
    if image is not None:
        mode = "image-to-video"
    elif video is not None:
        mode = "continuation"
    elif seconds == 0:
        mode = "text-to-image"
    else:
        mode = "long video" if seconds > config.max_duration else "text-to-video"
    return Request(prompts, mode, seconds, FPS * seconds + 1, nearest_template(h_div_w), output_type)


def check_continuation(config: PipelineConfig, given: int, target: int) -> None:
    """A video to continue must hold at least one whole clip of context and be shorter than the target."""
    clip = TEMPORAL_COMPRESSION * config.frames_per_clip
    if config.clips_per_window > 1 and given < 1 + clip:
        raise ValueError(
            f"the video is too short to continue: {given} frames at 16 fps, this model needs at least "
            f"{1 + clip} ({config.clip_seconds:g} s) as context"
        )
    if given >= target:
        raise ValueError(
            f"the video already has {given} frames ({(given - 1) / FPS:g} s at 16 fps); ask for a longer "
            f"duration than that to continue it"
        )


def sampling_options(
    config: PipelineConfig, guidance=None, guidance_scale=None, temperatures=None, sampler: str = "multinomial"
) -> SamplingOptions:
    """The model's sampling defaults with a call's overrides. ``temperatures``: (image pyramid, video clips)
    or one value per scale."""
    scale = check_guidance_scale(guidance_scale, stacklevel=3)  # the range policy: refused or warned here
    g = Guidance(
        method=config.guidance if guidance is None else guidance,
        scale=float(config.guidance_scale if scale is None else scale),
        apg_norm_threshold=config.apg_norm_threshold,
    )
    tau_image, tau_video, per_scale = config.tau_image, config.tau_video, None
    if temperatures is not None:
        values = list(check_temperatures(temperatures, stacklevel=3))
        if len(values) == 2:
            tau_image, tau_video = values
        else:
            per_scale = tuple(values)
    return SamplingOptions(g, tau_image, tau_video, temperatures=per_scale, sampler=sampler)


def check_negative_prompt(negative_prompt: object, options: SamplingOptions) -> str | None:
    """The negative prompt of a call (None or '' = the learned null text, as the original), checked: a string, and
    guidance on (without guidance it would be ignored)."""
    if negative_prompt is None or negative_prompt == "":
        return None
    negative_prompt = check_prompt(negative_prompt, "negative_prompt")
    if not options.guidance.active:
        raise ValueError("negative_prompt needs guidance (guidance='apg' or 'cfg' with a scale other than 1)")
    return negative_prompt


def window_prompts(
    config: PipelineConfig, prompts: Sequence[str], windows: Sequence[Window], suffix: str | None
) -> list[str]:
    """The decorated prompt of every window: window i takes prompt i (the last one repeats), tagged with the
    window's duration (``<<<t=Ns>>>``, videos only) and the suffix (the model's unless given; '' for none). Prompts
    beyond the last window are not used: a warning says so."""

    suffix = config.prompt_suffix if suffix is None else suffix
    if len(prompts) > len(windows):
        warnings.warn(
            f"{len(prompts)} window prompts were given but this video has {len(windows)} window(s) of at most "
            f"{config.max_duration} s: the last {len(prompts) - len(windows)} prompt(s) are not used (make the "
            "duration longer, or give fewer prompts)",
            UserWarning,
            stacklevel=3,
        )
    used = []
    for i, w in enumerate(windows):
        p = prompts[min(i, len(prompts) - 1)]
        seconds = None if w.frames == 1 else max(1, (w.frames - 1) // FPS)
        used.append(decorate_prompt(p, seconds, suffix=suffix or None))
    return used
