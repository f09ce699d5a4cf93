"""Captions for curated clips: a vision-language-model captioner plug-in, sidecar files and caption helpers.

The paper captions videos densely with a vision-language model (Tarsier2 for videos, InternVL for images). Here a
captioner is any object with::

    name: str
    num_frames: int        # frames it wants per video clip (spread evenly over the clip)
    frame_size: int        # shorter side of the frames it is given, in pixels
    def caption(self, frames: np.ndarray, kind: str) -> str    # uint8 [T, H, W, 3]; kind "video" or "image"

The built-in ``VLMCaptioner`` runs a LOCAL ``transformers`` checkpoint of the image-text-to-text kind
(``AutoProcessor`` + ``AutoModelForImageTextToText``: LLaVA, LLaVA-OneVision, Qwen2-VL / Tarsier2-style, ...):
the sampled frames go in as a sequence of images followed by the prompt, through the processor's chat template,
and the greedy (deterministic) answer is the caption. ``--captioner /models/vlm`` selects it; a dotted path
(``my_pkg.captions:MyCaptioner,key=value``) or an entry point of the group ``infinitystar.curate_captioners``
selects a custom class, built with the given options.

Without a captioner, a caption that already exists is kept (from the input manifest, or a sidecar ``.txt`` file
with the same stem as the media file); an item with none is written to the ``*.uncaptioned.jsonl`` manifest
instead of the training manifest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from infinitystar.curate.scenes import sample_indices
from infinitystar.curate.scorers import _parse_value, resolve_factory

ENTRY_POINT_GROUP = "infinitystar.curate_captioners"

DEFAULT_VIDEO_PROMPT = (
    "Describe this video in detail: the main subjects and their appearance, what they do and how they move, "
    "the setting, the camera movement, the lighting and the visual style."
)
DEFAULT_IMAGE_PROMPT = (
    "Describe this image in detail: the main subjects and their appearance, the setting, the composition, "
    "the lighting and the visual style."
)


@runtime_checkable
class Captioner(Protocol):
    name: str
    num_frames: int
    frame_size: int

    def caption(self, frames: np.ndarray, kind: str) -> str: ...


def clean_caption(text: str) -> str:
    """Whitespace collapsed, ends trimmed."""
    return re.sub(r"\s+", " ", text).strip()


def first_sentence(text: str) -> str:
    """The first sentence of a caption (up to the first ``.``, ``!`` or ``?`` followed by a space), or all of it.

    Used as the short image caption (``text``) when only a long one exists: the original trains images with
    the short caption 30% of the time."""
    text = clean_caption(text)
    match = re.search(r"[.!?](\s|$)", text)
    return text[: match.start() + 1] if match else text


def sidecar_caption(media_path: str | Path) -> str | None:
    """The caption in ``<stem>.txt`` next to a media file, or None (missing, empty or unreadable as UTF-8)."""
    path = Path(media_path).with_suffix(".txt")
    try:
        text = clean_caption(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


# --------------------------------------------------------------------------------------------
# The transformers VLM captioner
# --------------------------------------------------------------------------------------------


class VLMCaptioner:
    """Caption clips and images with a local vision-language checkpoint (see the module docstring).

    ``model``: a local folder with the model's config, weights and processor files (nothing is downloaded).
    ``num_frames`` frames per video clip (the model sees them as a sequence of images), resized so the shorter
    side is ``frame_size`` before the processor's own resizing. Decoding is greedy, so captions are reproducible.
    ``dtype``: ``auto`` (float32 on CPU, bfloat16 on GPU), ``float32``, ``bfloat16`` or ``float16``.
    """

    name = "vlm"

    def __init__(
        self,
        model: str,
        *,
        num_frames: int = 8,
        frame_size: int = 448,
        video_prompt: str = DEFAULT_VIDEO_PROMPT,
        image_prompt: str = DEFAULT_IMAGE_PROMPT,
        max_new_tokens: int = 256,
        device: str = "cpu",
        dtype: str = "auto",
    ) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one "Loading weights" bar per worker is noise in the curation output
        folder = Path(model)
        if not (folder / "config.json").is_file():
            raise ValueError(f"captioner model folder not found or without config.json: {folder}")
        if num_frames < 1 or frame_size < 8 or max_new_tokens < 1:
            raise ValueError(
                f"captioner needs num_frames >= 1, frame_size >= 8, max_new_tokens >= 1; "
                f"got {num_frames}, {frame_size}, {max_new_tokens}"
            )
        if not video_prompt.strip() or not image_prompt.strip():
            raise ValueError("captioner prompts must not be empty")
        from infinitystar.devices import DTYPES, parse_dtype

        if dtype != "auto" and str(dtype).lower() not in DTYPES:
            raise ValueError(f"captioner dtype {dtype!r} not supported; accepted: auto, {', '.join(DTYPES)}")
        torch_dtype = parse_dtype(None if dtype == "auto" else dtype, device)
        self.num_frames, self.frame_size, self.max_new_tokens = int(num_frames), int(frame_size), int(max_new_tokens)
        self.prompts = {"video": video_prompt, "image": image_prompt}
        self.device, self.dtype = torch.device(device), torch_dtype
        try:
            self.processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
            self.model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True, dtype=self.dtype)
        except (OSError, ValueError, KeyError, ImportError) as exc:
            raise ValueError(f"cannot load an image-text-to-text model and its processor from {folder}: {exc}") from exc
        self.model.to(self.device).eval()

    def prompt_text(self, num_images: int, kind: str) -> str:
        """The model's input text: the chat template when the processor has one, else image tokens + prompt."""
        prompt = self.prompts[kind]
        if getattr(self.processor, "chat_template", None):
            content = [{"type": "image"} for _ in range(num_images)] + [{"type": "text", "text": prompt}]
            messages = [{"role": "user", "content": content}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        token = getattr(self.processor, "image_token", None) or "<image>"
        return " ".join([token] * num_images) + "\n" + prompt

    def caption(self, frames: np.ndarray, kind: str) -> str:
        import torch
        from PIL import Image

        if kind not in self.prompts:
            raise ValueError(f"kind must be 'video' or 'image'; got {kind!r}")
        if kind == "video" and len(frames) > self.num_frames:
            frames = frames[sample_indices(0, len(frames), self.num_frames)]
        images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
        inputs = self.processor(text=[self.prompt_text(len(images), kind)], images=images, return_tensors="pt")
        inputs = {
            k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
            for k, v in inputs.items()
            if isinstance(v, torch.Tensor)
        }
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new_tokens = out[:, inputs["input_ids"].shape[1] :]  # [1, L_prompt + L_new] -> [1, L_new]
        return clean_caption(self.processor.batch_decode(new_tokens, skip_special_tokens=True)[0])


# --------------------------------------------------------------------------------------------
# Spec and construction
# --------------------------------------------------------------------------------------------

BUILTIN_CAPTIONERS = {"vlm": VLMCaptioner}


@dataclass(frozen=True)
class CaptionerSpec:
    """A captioner to build in each worker: a local model folder (the ``VLMCaptioner``) or a registered name /
    dotted path, with constructor options. Plain data (sent to workers, stored in the resume state)."""

    target: str
    options: tuple[tuple[str, Any], ...] = ()

    def to_json(self) -> dict:
        return {"target": self.target, "options": dict(self.options)}


def parse_captioner_spec(text: str, **options: Any) -> CaptionerSpec:
    """``"MODEL_DIR_OR_NAME[,key=value,...]"`` plus keyword options (the CLI flags; None values are skipped)."""
    parts = [p.strip() for p in text.split(",")]
    if not parts[0]:
        raise ValueError(f"captioner spec {text!r} has no model folder or name")
    opts: dict[str, Any] = {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"captioner spec {text!r}: {part!r} is not key=value")
        opts[key.strip()] = _parse_value(value)
    opts.update({k: v for k, v in options.items() if v is not None})
    target = str(Path(parts[0]).resolve()) if Path(parts[0]).is_dir() else parts[0]  # workers may run elsewhere
    return CaptionerSpec(target, tuple(sorted(opts.items())))


def _captioner_factory(spec: CaptionerSpec):
    if Path(spec.target).is_dir():
        return lambda **kw: VLMCaptioner(spec.target, **kw)
    if "/" in spec.target or "\\" in spec.target:
        raise ValueError(f"captioner model folder not found: {spec.target}")
    return resolve_factory(spec.target, BUILTIN_CAPTIONERS, ENTRY_POINT_GROUP, "captioner")


def check_captioner_spec(spec: CaptionerSpec) -> None:
    """Fail early (before workers start) when the target is neither a folder nor a resolvable name."""
    _captioner_factory(spec)


def build_captioner(spec: CaptionerSpec) -> Captioner:
    factory = _captioner_factory(spec)
    try:
        captioner = factory(**dict(spec.options))
    except TypeError as exc:
        raise ValueError(f"cannot build captioner {spec.target!r} with options {dict(spec.options)}: {exc}") from exc
    missing = [m for m in ("caption", "num_frames", "frame_size") if not hasattr(captioner, m)]
    if missing:
        raise ValueError(f"captioner {spec.target!r} lacks {missing}; see infinitystar.curate.captioner")
    return captioner
