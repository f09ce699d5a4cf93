"""The generation settings of one output, as the record stored in its file's metadata.

Everything that reproduces an output goes into one JSON object (``GenerationResult.settings``), written once into
the file: the mp4 / gif ``comment`` tag, the png ``comment`` text chunk. Prompts are stored up to
:data:`METADATA_PROMPT_CHARS` characters (a prompt of 100,000 characters would otherwise be stored whole; the model
reads far fewer tokens anyway), with their full length beside them when cut. :func:`read_settings` reads the record
back from a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: the longest prompt stored in a file's metadata, in characters (longer ones are cut and marked)
METADATA_PROMPT_CHARS = 2000
#: the metadata key the record is stored under (mp4 / gif tag, png text chunk)
METADATA_KEY = "comment"


def clip_text(text: str | None, limit: int = METADATA_PROMPT_CHARS) -> str | None:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut)."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def prompt_fields(name: str, text: str | None) -> dict[str, Any]:
    """``{name: text}`` cut to :data:`METADATA_PROMPT_CHARS`, plus ``{name}_chars`` (the full length) when cut."""
    if text is None:
        return {}
    fields: dict[str, Any] = {name: clip_text(text)}
    if len(text) > METADATA_PROMPT_CHARS:
        fields[f"{name}_chars"] = len(text)
    return fields


def input_name(x: Any) -> str | None:
    """How an image / video input is recorded: a file's name (not the folders above it), else its kind."""
    if x is None:
        return None
    if isinstance(x, (str, Path)):
        return Path(x).name
    return type(x).__name__


def settings_record(
    *,
    prompts: list[str] | tuple[str, ...],
    mode: str,
    seed: int,
    options,
    frames_shape: tuple[int, ...] | None,
    seconds: int,
    fps: int,
    resolution: str,
    model: str | None,
    device: str,
    dtype: str,
    negative_prompt: str | None = None,
    prompt_suffix: str | None = None,
    image: Any = None,
    video: Any = None,
) -> dict[str, Any]:
    """The record of one output. ``options``: the call's ``SamplingOptions``; ``frames_shape``: ``(T, H, W, 3)``
    (None for latents only)."""
    from infinitystar import __version__

    g = options.guidance
    record: dict[str, Any] = {"software": f"infinitystar {__version__}"}
    record.update(prompt_fields("prompt", prompts[0]))
    if len(prompts) > 1:  # one prompt per window of a long video
        record["window_prompts"] = [clip_text(p, METADATA_PROMPT_CHARS // len(prompts)) for p in prompts]
    record.update(prompt_fields("negative_prompt", negative_prompt or None))
    if prompt_suffix:
        record["prompt_suffix"] = clip_text(prompt_suffix)
    record.update(mode=mode, seed=int(seed), guidance=g.method, guidance_scale=float(g.scale))
    if options.temperatures is not None:
        record["temperatures"] = [float(t) for t in options.temperatures]
    else:
        record["temperatures"] = [float(options.tau_image), float(options.tau_video)]
    record["sampler"] = options.sampler
    record["duration"] = seconds
    if frames_shape is not None:
        t, h, w = (int(v) for v in frames_shape[:3])
        record.update(frames=t, height=h, width=w)
    record.update(fps=fps, resolution=resolution, model=model, device=device, dtype=dtype)
    for key, value in (("image", image), ("video", video)):
        if value is not None:
            record[key] = input_name(value)
    return record


def metadata_tags(record: dict[str, Any]) -> dict[str, str]:
    """The tags a media file gets: the record once, as compact JSON."""
    return {METADATA_KEY: json.dumps(record, ensure_ascii=False, separators=(",", ":"))}


def read_settings(path: str | Path) -> dict[str, Any] | None:
    """The settings record stored in an output file (mp4, gif or png), or None when it holds none."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        from PIL import Image

        with Image.open(path) as im:
            text = im.info.get(METADATA_KEY)
    else:
        import av

        with av.open(str(path)) as container:
            text = container.metadata.get(METADATA_KEY)
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
