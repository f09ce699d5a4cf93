"""The user-facing pipeline: load a model once, then generate images and videos from prompts.

Every mode is the same loop over *windows* (see :func:`plan_windows`): a window is one run of
the scale-by-scale generation over the model's trained length, optionally teacher-forced with
the bits of frames that already exist. Text-to-image and text-to-video are one window without
context; image-to-video forces the image pyramid with the encoded image; video continuation
forces whole clips of the given video; a long video is window after window, each forced with
the tail of the video so far. Nothing here re-implements the model: it composes the VAE, the
quantizer, :func:`~infinitystar.generate.generate_latent` and the text encoder.
"""

from __future__ import annotations

import json
import math
import secrets
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import config_dicts
from .checkpoints import CheckpointError, atomic_write
from .config import TransformerConfig, VAEConfig
from .generate import SamplingOptions, StepRecord, generate_latent
from .media import frames_to_uint8, write_video
from .quantizer import encode_pyramid
from .sampling import GUIDANCE_METHODS, Guidance
from .schedule import (
    FPS,
    PN_NUM_SCALES,
    RESOLUTIONS,
    TEMPORAL_COMPRESSION,
    Schedule,
    build_schedule,
    latent_frames,
    nearest_template,
    parse_aspect_ratio,
)
from .text import TextEncoder, check_prompt, decorate_prompt
from .transformer import InfinityTransformer
from .vae import VideoVAE

#: where the built-in default model lives inside the package (trained by the project)
BUILTIN_MODEL_DIR = Path(__file__).parent / "assets" / "default"
#: our own saved layout: this file at the root, one sub-folder per component
MODEL_INDEX = "model_index.json"
#: the released layout (FoundationVision/InfinityStar on the Hugging Face hub)
RELEASED_WEIGHTS = {"720p": "infinitystar_8b_720p_weights", "480p": "infinitystar_8b_480p_weights"}
RELEASED_VAE = "infinitystar_videovae.pth"
RELEASED_T5 = "text_encoder/flan-t5-xl-official"
#: a text-encoder folder holding this file is loaded through the class it names
TEXT_ENCODER_INDEX = "infinitystar_text_encoder.json"
OUTPUT_TYPES = ("np", "pt", "latent")


class BuiltinModelMissing(FileNotFoundError):
    """Raised when no checkpoint is given and the package ships no built-in model."""


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
# Inputs
# --------------------------------------------------------------------------------------------


def _as_pil_frames(frames: np.ndarray) -> list:
    from PIL import Image

    return [Image.fromarray(f) for f in frames]


def _array_frames(x: Any, what: str) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` from an array or tensor given as uint8 ``[..., H, W, 3]`` or float
    ``[3, ..., H, W]`` in [-1, 1]."""
    if isinstance(x, torch.Tensor):
        if x.is_floating_point():
            if x.shape[0] != 3:
                raise ValueError(f"a float {what} tensor must be [3, (T,) H, W] in [-1, 1], got {tuple(x.shape)}")
            if not torch.isfinite(x).all():
                raise ValueError(f"the {what} tensor contains NaN or infinite values")
            x = ((x.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            x = x.movedim(0, -1)  # [3, (T,) H, W] -> [(T,) H, W, 3]
        x = x.cpu().numpy()
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.shape[-1] != 3 or x.ndim not in (3, 4):
        raise ValueError(
            f"{what} must be a file path, a PIL image, uint8 [(T,) H, W, 3] or float [3, (T,) H, W] in [-1, 1]; "
            f"got {x.dtype} {x.shape}"
        )
    return x if x.ndim == 4 else x[None]


def _frames_to_unit(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float ``[3, T, H, W]`` in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).float().div(127.5).sub(1).permute(3, 0, 1, 2)


def _resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from .media import cover_resize_crop

    if frames.shape[1:3] == size:
        return frames
    return np.stack([np.asarray(cover_resize_crop(im, *size)) for im in _as_pil_frames(frames)])


def _input_aspect(x: Any, what: str) -> float:
    """h / w of an image or video input without decoding more than needed."""
    if isinstance(x, (str, Path)):
        path = Path(x)
        if not path.is_file():
            raise ValueError(f"{what} not found: {path}")
        if what == "image":
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(path) as im:
                    w, h = im.size
            except (UnidentifiedImageError, OSError) as exc:
                raise ValueError(f"cannot read image {path}: it is corrupt or not an image ({exc})") from exc
        else:
            import av

            try:
                with av.open(str(path)) as c:
                    s = c.streams.video[0]
                    h, w = s.codec_context.height, s.codec_context.width
            except (av.error.FFmpegError, IndexError, OSError) as exc:
                raise ValueError(f"cannot read video {path}: it is corrupt or has no video stream ({exc})") from exc
        return h / w
    if hasattr(x, "size") and hasattr(x, "convert"):  # PIL image
        w, h = x.size
        return h / w
    arr = _array_frames(x, what)
    return arr.shape[1] / arr.shape[2]


def load_image_input(image: Any, size: tuple[int, int]) -> torch.Tensor:
    """An image (path, PIL image, array or tensor) as ``[3, 1, H, W]`` in [-1, 1] at ``size``."""
    from .media import cover_resize_crop, read_image

    if isinstance(image, (str, Path)):
        return read_image(image, size=size)[:, None]
    if hasattr(image, "size") and hasattr(image, "convert"):
        arr = np.asarray(cover_resize_crop(image.convert("RGB"), *size))[None]
    else:
        arr = _array_frames(image, "image")
        if arr.shape[0] != 1:
            raise ValueError(f"image must be one frame, got {arr.shape[0]}; pass several frames as video=")
        arr = _resize_frames(arr, size)
    return _frames_to_unit(arr)


def load_video_input(video: Any, size: tuple[int, int]) -> torch.Tensor:
    """A video (path, or frames at 16 fps as an array or tensor) as ``[3, T, H, W]`` in [-1, 1],
    T = 1 + 4k (a video file is resampled to 16 fps and trimmed to the longest such count)."""
    from .media import read_video

    if isinstance(video, (str, Path)):
        return read_video(video, size=size)
    arr = _array_frames(video, "video")
    keep = 1 + TEMPORAL_COMPRESSION * ((arr.shape[0] - 1) // TEMPORAL_COMPRESSION)
    return _frames_to_unit(_resize_frames(arr[:keep], size))


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------


@dataclass
class GenerationResult:
    """What a pipeline call returns.

    ``frames``: uint8 ``[T, H, W, 3]`` (numpy for ``output_type='np'``, a tensor for 'pt', None
    for 'latent'); ``seed``: the seed that reproduces it; ``latents``: the generated latent of
    each window ``[1, 64, t, h, w]``; ``timings``: seconds per phase.
    """

    frames: np.ndarray | torch.Tensor | None
    seed: int
    prompt: str
    mode: str
    fps: int = FPS
    latents: list[torch.Tensor] = field(default_factory=list)
    prompts_used: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def is_image(self) -> bool:
        return self.frames is not None and len(self.frames) == 1

    def save(self, path: str | Path) -> Path:
        """Write ``.mp4`` / ``.gif`` (a video) or ``.png`` (an image), prompt and seed in its metadata."""
        if self.frames is None:
            raise ValueError("this result holds latents only (output_type='latent'); nothing to save as media")
        frames = torch.as_tensor(np.asarray(self.frames))
        meta = {"comment": f"seed={self.seed}; prompt={self.prompt}", "title": self.prompt, "seed": str(self.seed)}
        return write_video(path, frames, fps=self.fps, metadata=meta)


# --------------------------------------------------------------------------------------------
# Loading helpers
# --------------------------------------------------------------------------------------------


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _dtype(value: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if value is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(value, torch.dtype):
        return value
    names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    names.update({"fp16": torch.float16, "float16": torch.float16})
    try:
        return names[str(value).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {value!r}; accepted: {', '.join(names)}") from None


def load_text_encoder(folder: str | Path, device: torch.device | str = "cpu", dtype=None) -> TextEncoder:
    """The text encoder saved in ``folder``: a class named in ``infinitystar_text_encoder.json``
    (``{"class": "package.module.Class"}``, loaded with ``Class.from_pretrained(folder, device=)``),
    else a T5 encoder folder (``config.json`` of a T5 model plus its tokenizer)."""
    import importlib

    folder = Path(folder)
    index = folder / TEXT_ENCODER_INDEX
    if index.is_file():
        spec = _read_json(index)
        module, _, name = str(spec.get("class", "")).rpartition(".")
        if not module.startswith("infinitystar."):
            raise CheckpointError(f"{index}: text encoder class must be an infinitystar class, got {spec!r}")
        cls = getattr(importlib.import_module(module), name)
        return cls.from_pretrained(folder, device=device)
    from .text import T5TextEncoder

    return T5TextEncoder(folder, device=device, dtype=dtype)


def _released_root(path: Path, resolution: str | None) -> tuple[Path, Path, str]:
    """(root, weights folder, resolution) of a released layout, or raise if ``path`` is not one."""
    if (path / "model.safetensors.index.json").is_file() and path.name in RELEASED_WEIGHTS.values():
        res = next(r for r, n in RELEASED_WEIGHTS.items() if n == path.name)
        if resolution is not None and resolution != res:
            raise ValueError(f"{path} holds the {res} model, but resolution={resolution!r} was asked for")
        return path.parent, path, res
    present = {r: path / n for r, n in RELEASED_WEIGHTS.items() if (path / n).is_dir()}
    if not present:
        raise FileNotFoundError("no released weights folder")
    if resolution is None:
        resolution = "720p" if "720p" in present else "480p"
    if resolution not in present:
        have = ", ".join(f"{r} ({p.name})" for r, p in present.items())
        raise ValueError(f"{path} has no {RELEASED_WEIGHTS.get(resolution, resolution)} folder; it has: {have}")
    return path, present[resolution], resolution


def _describe_layouts() -> str:
    return (
        f"a folder with {MODEL_INDEX} (our layout: transformer/, vae/, text_encoder/), or the released layout "
        f"({' or '.join(RELEASED_WEIGHTS.values())}/ + {RELEASED_VAE} + {RELEASED_T5}/)"
    )


# --------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------


class InfinityStarPipeline:
    """Text-to-image, text-to-video, image-to-video, video continuation and long video.

    Build it with :meth:`from_pretrained` (the built-in model, our saved layout or the released
    checkpoints) or from components. Call it with a prompt::

        pipe = InfinityStarPipeline.from_pretrained()           # the built-in default model
        out = pipe("a red circle moving right on a black background", seed=0)
        out.save("circle.mp4"); out.frames.shape                # (T, H, W, 3) uint8
    """

    def __init__(
        self,
        transformer: InfinityTransformer,
        vae: VideoVAE,
        text_encoder: TextEncoder,
        config: PipelineConfig | None = None,
        *,
        offload_text_encoder: bool = False,
    ) -> None:
        self.transformer = transformer.eval()
        self.vae = vae.eval()
        self.text_encoder = text_encoder
        self.config = config or PipelineConfig()
        self.offload_text_encoder = offload_text_encoder
        self.progress_bar_config: dict[str, Any] = {}
        if text_encoder.channels != transformer.cfg.text_channels:
            raise ValueError(
                f"the text encoder gives {text_encoder.channels}-channel features but the transformer expects "
                f"{transformer.cfg.text_channels}"
            )

    # ---- loading and saving -------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        resolution: str | None = None,
        offload_text_encoder: bool = False,
        config: PipelineConfig | None = None,
    ) -> InfinityStarPipeline:
        """Load a model folder; ``path=None`` loads the built-in default model.

        ``path`` is our saved layout (``model_index.json``) or the released one (a folder with
        ``infinitystar_8b_{720p,480p}_weights/``, ``infinitystar_videovae.pth`` and
        ``text_encoder/flan-t5-xl-official/``, or one of the weights folders itself).
        ``resolution`` picks the 480p or 720p weights when both are present (default 720p).
        ``dtype``: the transformer's blocks (default bf16 on CUDA, fp32 on CPU; embeddings and
        heads stay fp32). ``offload_text_encoder`` moves T5 to the CPU after each encoding.
        ``config`` overrides the generation settings the folder implies.
        """
        device = torch.device(device) if device is not None else default_device()
        dtype = _dtype(dtype, device)
        if path is None:
            if not (BUILTIN_MODEL_DIR / MODEL_INDEX).is_file():
                raise BuiltinModelMissing(
                    "this installation has no built-in default model yet (it is being trained by the project; "
                    f"see the README). Pass a checkpoint folder instead: {_describe_layouts()}"
                )
            path = BUILTIN_MODEL_DIR
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"checkpoint folder not found: {path}; expected {_describe_layouts()}")
        if (path / MODEL_INDEX).is_file():
            return cls._from_own_layout(path, device, dtype, resolution, offload_text_encoder, config)
        try:
            root, weights, res = _released_root(path, resolution)
        except FileNotFoundError:
            raise CheckpointError(f"{path} is not a model folder; expected {_describe_layouts()}") from None
        return cls._from_released(root, weights, res, device, dtype, offload_text_encoder, config)

    @classmethod
    def _from_released(cls, root, weights, resolution, device, dtype, offload, config) -> InfinityStarPipeline:
        from .transformer_checkpoint import infer_transformer_config, load_original_transformer

        vae_path, t5_path = root / RELEASED_VAE, root / RELEASED_T5
        for p, what in ((vae_path, "VAE checkpoint"), (t5_path, "text encoder folder")):
            if not p.exists():
                raise CheckpointError(f"released layout at {root}: {what} {p.name} is missing ({p})")
        cfg = infer_transformer_config(weights)
        transformer = load_original_transformer(weights, cfg, device, dtype, outer_dtype=torch.float32)
        vae = VideoVAE.from_original_checkpoint(vae_path, device=device).to(dtype=_vae_dtype(dtype))
        text_encoder = load_text_encoder(t5_path, device)
        return cls(transformer, vae, text_encoder, config or RELEASED_CONFIGS[resolution], offload_text_encoder=offload)

    @classmethod
    def _from_own_layout(cls, root, device, dtype, resolution, offload, config) -> InfinityStarPipeline:
        from .transformer_checkpoint import load_original_transformer

        index = _read_json(root / MODEL_INDEX)
        if index.get("format") != "infinitystar":
            raise CheckpointError(f"{root / MODEL_INDEX} is not an infinitystar model index: {index!r:.200}")
        pipe_cfg = config or PipelineConfig.from_dict(index.get("pipeline", {}))
        if resolution is not None and resolution != pipe_cfg.resolution:
            raise ValueError(f"{root} holds a {pipe_cfg.resolution} model, but resolution={resolution!r} was asked for")
        t_cfg = TransformerConfig.from_dict(_read_json(root / "transformer" / "config.json"))
        transformer = load_original_transformer(root / "transformer", t_cfg, device, dtype, outer_dtype=torch.float32)
        v_cfg = VAEConfig.from_dict(_read_json(root / "vae" / "config.json"))
        vae = VideoVAE.from_original_checkpoint(root / "vae" / "model.safetensors", v_cfg, device=device)
        text_encoder = load_text_encoder(root / "text_encoder", device)
        return cls(transformer, vae.to(dtype=_vae_dtype(dtype)), text_encoder, pipe_cfg, offload_text_encoder=offload)

    def save_pretrained(self, folder: str | Path, *, dtype: torch.dtype | None = None) -> Path:
        """Write our layout: ``model_index.json``, ``transformer/`` and ``vae/`` (safetensors with
        the original key names + ``config.json``) and ``text_encoder/``. ``dtype`` (e.g. fp16)
        stores the floating-point weights in that type (loading casts them back)."""
        from .checkpoints import save_safetensors
        from .transformer_checkpoint import save_original_transformer
        from .vae import original_vae_state_dict

        folder = Path(folder)
        (folder / "transformer").mkdir(parents=True, exist_ok=True)
        (folder / "vae").mkdir(parents=True, exist_ok=True)
        save_original_transformer(self.transformer, folder / "transformer", dtype=dtype)
        _write_json(folder / "transformer" / "config.json", self.transformer.cfg.to_dict())
        vae_state = {
            k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
            for k, v in original_vae_state_dict(self.vae).items()
        }
        save_safetensors(vae_state, folder / "vae" / "model.safetensors", metadata={"format": "pt"})
        _write_json(folder / "vae" / "config.json", self.vae.cfg.to_dict())
        self._save_text_encoder(folder / "text_encoder")
        index = {"format": "infinitystar", "version": 1, "pipeline": self.config.to_dict()}
        _write_json(folder / MODEL_INDEX, index)
        return folder

    def _save_text_encoder(self, folder: Path) -> None:
        enc = self.text_encoder
        if hasattr(enc, "save_pretrained"):
            enc.save_pretrained(folder)
        elif getattr(enc, "path", None) is not None:  # T5: copy its local folder as it is
            if folder.exists():
                shutil.rmtree(folder)
            shutil.copytree(enc.path, folder)
        else:
            raise TypeError(f"cannot save a {type(enc).__name__}: it has neither save_pretrained nor a source folder")

    def to(self, device: str | torch.device) -> InfinityStarPipeline:
        self.transformer.to(device)
        self.vae.to(device)
        if not self.offload_text_encoder:
            self.text_encoder.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    def set_progress_bar_config(self, **kwargs) -> None:
        """tqdm options for the step progress bar, e.g. ``disable=True``."""
        self.progress_bar_config = dict(kwargs)

    # ---- schedules -----------------------------------------------------------------------------

    def schedule(self, h_div_w: float, num_latent_frames: int) -> Schedule:
        """The schedule of one window: the model's resolution and repetitions, the template of ``h_div_w``."""
        c = self.config
        return build_schedule(
            h_div_w,
            c.resolution,
            num_latent_frames,
            image_repetition=c.image_repetition,
            video_repetition=c.video_repetition,
            detail_scale_min_tokens=c.detail_scale_min_tokens,
            frames_per_clip=c.frames_per_clip,
        )

    def pixel_size(self, aspect_ratio: str | float) -> tuple[int, int]:
        """(height, width) of the videos this model makes at an aspect ratio ('16:9' or h/w)."""
        return self.schedule(nearest_template(parse_aspect_ratio(aspect_ratio)), 1).pixel_hw

    # ---- generation ----------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        *,
        image: Any = None,
        video: Any = None,
        duration: float | None = None,
        resolution: str | None = None,
        aspect_ratio: str | float | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        negative_prompt: str | None = None,
        guidance: str | None = None,
        guidance_scale: float | None = None,
        temperatures: tuple[float, float] | Sequence[float] | None = None,
        prompt_suffix: str | None = None,
        sampler: str = "multinomial",
        exact_forcing: bool = False,
        callback: Callable[[int, int, StepRecord], None] | None = None,
        output_type: str = "np",
        progress: bool = True,
    ) -> GenerationResult:
        """Generate an image (``duration=0``) or a video of ``duration`` seconds.

        ``image``: image-to-video (its bits force the first frame). ``video``: continuation (its
        last frames force the next ones; the output starts with it). ``prompt``: one prompt, or
        one per window of a long video (the last one repeats). ``aspect_ratio``: 'W:H' or h/w,
        default the input's (image or video) or the model's. ``seed`` / ``generator``: one of
        them makes the output reproducible; with neither a random seed is drawn and returned.
        ``guidance``: 'apg', 'cfg' or 'none'; ``guidance_scale`` its strength.
        ``temperatures``: (image pyramid, video clips) or one value per scale.
        ``callback(done, total, record)`` runs after every scale step.
        """
        timings: dict[str, float] = {}
        t_start = time.perf_counter()
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("prompt is empty: give a prompt (or a list of prompts, one per window)")
        prompts = [check_prompt(p) for p in prompts]
        if image is not None and video is not None:
            raise ValueError("give image= (image-to-video) or video= (continuation), not both")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"unknown output_type {output_type!r}; accepted: {', '.join(OUTPUT_TYPES)}")
        cfg = self.config
        if resolution is not None and resolution != cfg.resolution:
            raise ValueError(
                f"this model generates {cfg.resolution}; resolution={resolution!r} needs other weights "
                f"(load them with from_pretrained(..., resolution={resolution!r}))"
            )
        seconds = resolve_duration(duration, cfg)
        if seconds == 0 and (image is not None or video is not None):
            raise ValueError("duration=0 asks for an image; with image= or video= give a video duration (>= 1 s)")
        options = self._sampling_options(guidance, guidance_scale, temperatures, sampler)

        given = image if image is not None else video
        if aspect_ratio is None:
            h_div_w = _input_aspect(given, "image" if image is not None else "video") if given is not None else None
            h_div_w = h_div_w if h_div_w is not None else parse_aspect_ratio(cfg.aspect_ratio)
        else:
            h_div_w = parse_aspect_ratio(aspect_ratio)
        h_div_w = nearest_template(h_div_w)
        size = self.pixel_size(h_div_w)

        target = FPS * seconds + 1
        if image is not None:
            known, mode = load_image_input(image, size), "image-to-video"
        elif video is not None:
            known, mode = load_video_input(video, size), "continuation"
            self._check_continuation_input(known.shape[1], target)
        else:
            known, mode = None, "text-to-image" if seconds == 0 else "text-to-video"
        if mode == "text-to-video" and seconds > cfg.max_duration:
            mode = "long video"
        windows = plan_windows(0 if known is None else known.shape[1], target, cfg)
        timings["prepare"] = time.perf_counter() - t_start

        if generator is None:
            seed = secrets.randbits(31) if seed is None else int(seed)
            generator = torch.Generator(device=self.device).manual_seed(seed)
        elif seed is None:
            seed = int(generator.initial_seed())

        texts, used = self._encode_prompts(prompts, windows, prompt_suffix, timings)
        negative = self._encode_negative(negative_prompt, options, timings)
        schedules = [self.schedule(h_div_w, latent_frames(w.frames)) for w in windows]
        total = sum(s.num_steps for s in schedules)

        from tqdm.auto import tqdm

        bar_cfg = {"disable": not progress, "unit": "step", "desc": mode, **self.progress_bar_config}
        frames_so_far = known  # float [3, N, H, W] in [-1, 1] on the CPU, or None
        latents: list[torch.Tensor] = []
        done = 0
        with tqdm(total=total, **bar_cfg) as bar:
            for i, (w, sched) in enumerate(zip(windows, schedules)):

                def on_step(record: StepRecord) -> None:
                    nonlocal done
                    done += 1
                    bar.update(1)
                    if callback is not None:
                        callback(done, total, record)

                forced = None
                if w.context_frames:
                    t0 = time.perf_counter()
                    context = frames_so_far[:, frames_so_far.shape[1] - w.context_frames :]
                    forced = self._forced_bits(context, sched, generator)
                    timings["encode"] = timings.get("encode", 0.0) + time.perf_counter() - t0
                t0 = time.perf_counter()
                out = generate_latent(
                    self.transformer,
                    sched,
                    texts[i],
                    options=options,
                    generator=generator,
                    forced_bits=forced,
                    exact_forcing=exact_forcing,
                    negative_text=negative,
                    on_step=on_step,
                )
                timings["transformer"] = timings.get("transformer", 0.0) + time.perf_counter() - t0
                latents.append(out.latent)
                if output_type == "latent" and len(windows) == 1:
                    break
                t0 = time.perf_counter()
                decoded = self.vae.decode(out.latent).float().clamp(-1, 1)[0].cpu()  # [3, T, H, W]
                timings["decode"] = timings.get("decode", 0.0) + time.perf_counter() - t0
                frames_so_far = self._append(frames_so_far, decoded, w, first=(i == 0))

        frames = None
        if output_type != "latent":
            uint8 = frames_to_uint8(frames_so_far[None])[0]  # [T, H, W, 3]
            frames = uint8.numpy() if output_type == "np" else uint8
        timings["total"] = time.perf_counter() - t_start
        return GenerationResult(frames, seed, prompts[0], mode, FPS, latents, used, timings)

    # ---- pieces of a call ----------------------------------------------------------------------

    def _sampling_options(self, guidance, guidance_scale, temperatures, sampler) -> SamplingOptions:
        cfg = self.config
        g = Guidance(
            method=cfg.guidance if guidance is None else guidance,
            scale=float(cfg.guidance_scale if guidance_scale is None else guidance_scale),
            apg_norm_threshold=cfg.apg_norm_threshold,
        )
        tau_image, tau_video, per_scale = cfg.tau_image, cfg.tau_video, None
        if temperatures is not None:
            values = [float(v) for v in temperatures]
            if any(not (math.isfinite(v) and v > 0) for v in values):
                raise ValueError(f"temperatures must be positive numbers, got {values}")
            if len(values) == 2:
                tau_image, tau_video = values
            else:
                per_scale = tuple(values)
        return SamplingOptions(g, tau_image, tau_video, temperatures=per_scale, sampler=sampler)

    def _check_continuation_input(self, given: int, target: int) -> None:
        cfg = self.config
        clip = TEMPORAL_COMPRESSION * cfg.frames_per_clip
        if cfg.clips_per_window > 1 and given < 1 + clip:
            raise ValueError(
                f"the video is too short to continue: {given} frames at 16 fps, this model needs at least "
                f"{1 + clip} ({cfg.clip_seconds:g} s) as context"
            )
        if given >= target:
            raise ValueError(
                f"the video already has {given} frames ({(given - 1) / FPS:g} s at 16 fps); ask for a longer "
                f"duration than that to continue it"
            )

    def _encode_prompts(self, prompts, windows, suffix, timings) -> tuple[list[torch.Tensor], list[str]]:
        """Decorated text features per window (each distinct prompt encoded once)."""
        suffix = self.config.prompt_suffix if suffix is None else suffix
        used = []
        for i, w in enumerate(windows):
            p = prompts[min(i, len(prompts) - 1)]
            window_seconds = (w.frames - 1) // FPS
            used.append(decorate_prompt(p, None if w.frames == 1 else max(1, window_seconds), suffix=suffix or None))
        t0 = time.perf_counter()
        distinct = sorted(set(used), key=used.index)
        features = dict(zip(distinct, self._run_text_encoder(distinct)))
        timings["text"] = time.perf_counter() - t0
        return [features[u] for u in used], used

    def _run_text_encoder(self, prompts: list[str]) -> list[torch.Tensor]:
        enc = self.text_encoder
        if self.offload_text_encoder and enc.device != self.device:
            enc.to(self.device)
        feats = enc.encode(prompts)
        if self.offload_text_encoder:
            enc.offload()
        return [f.to(self.device, torch.float32) for f in feats]

    def _encode_negative(self, negative_prompt, options: SamplingOptions, timings) -> torch.Tensor | None:
        if negative_prompt is None or negative_prompt == "":
            return None  # the learned null text, as the original
        if not options.guidance.active:
            raise ValueError("negative_prompt needs guidance (guidance='apg' or 'cfg' with a scale other than 1)")
        t0 = time.perf_counter()
        feats = self._run_text_encoder([check_prompt(negative_prompt, "negative_prompt")])[0]
        timings["text"] = timings.get("text", 0.0) + time.perf_counter() - t0
        return feats

    def _forced_bits(self, context: torch.Tensor, schedule: Schedule, generator) -> list[torch.Tensor]:
        """Bits of the teacher-forced steps: the context frames encoded, quantised over the
        window's first ``1 + clips`` pyramids."""
        t = latent_frames(context.shape[1])
        clips = 1 + (t - 1) // self.config.frames_per_clip
        forced_schedule = schedule.truncate_clips(clips)
        if forced_schedule.num_latent_frames != t:
            raise AssertionError(f"context of {t} latent frames does not fill {clips} clips")  # plan_windows bug
        latent = self.vae.encode(
            context[None].to(self.device), sample=self.config.sample_posterior, generator=generator
        ).float()  # [1, 64, t, h, w]
        return encode_pyramid(latent, forced_schedule).bits

    @staticmethod
    def _append(frames: torch.Tensor | None, decoded: torch.Tensor, w: Window, first: bool) -> torch.Tensor:
        """Add a window's decoded frames to the video so far.

        The first window contributes all its frames (its context frames reconstructed, as the
        original shows them), after any given frames before its context; later windows add their
        new frames only.
        """
        if frames is None:
            return decoded
        if first:
            return torch.cat([frames[:, : frames.shape[1] - w.context_frames], decoded], dim=1)
        return torch.cat([frames, decoded[:, w.context_frames :]], dim=1)


def _vae_dtype(dtype: torch.dtype) -> torch.dtype:
    """The VAE runs in the pipeline dtype except fp16, whose range its activations exceed."""
    return torch.bfloat16 if dtype == torch.float16 else dtype


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"missing {path.name} in {path.parent}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from exc


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2) + "\n"))


def default_filename(prompt: str, seed: int, image: bool, index: int | None = None) -> str:
    """``{prompt slug}_seed{seed}.mp4`` (``.png`` for an image): the seed is always in the name."""
    from .prompt_files import slugify

    slug = slugify(prompt)
    suffix = f"_{index}" if index is not None else ""
    return f"{slug}_seed{seed}{suffix}.{'png' if image else 'mp4'}"


__all__ = [
    "BUILTIN_MODEL_DIR",
    "BuiltinModelMissing",
    "GenerationResult",
    "InfinityStarPipeline",
    "PipelineConfig",
    "RELEASED_CONFIGS",
    "Window",
    "default_filename",
    "load_text_encoder",
    "plan_windows",
    "resolve_duration",
]
