"""What a pipeline call returns: the frames, the seed that reproduces them, the latents and timings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from infinitystar.generation.settings import metadata_tags, prompt_fields
from infinitystar.media import write_video
from infinitystar.sizes import (
    FPS,
)

#: where the built-in default model lives inside the package (trained by the project)


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------


@dataclass
class GenerationResult:
    """What a pipeline call returns.

    ``frames``: uint8 ``[T, H, W, 3]`` (numpy for ``output_type='np'``, a tensor for 'pt', None
    for 'latent'); ``seed``: the seed that reproduces it; ``latents``: the generated latent of
    each window ``[1, 64, t, h, w]``; ``timings``: seconds per phase; ``settings``: everything that reproduces it
    (prompt, seed, guidance, temperatures, sampler, size, model, device, dtype, package version), the record
    :meth:`save` stores in the file (see :mod:`infinitystar.generation.settings`).
    """

    frames: np.ndarray | torch.Tensor | None
    seed: int
    prompt: str
    mode: str
    fps: int = FPS
    latents: list[torch.Tensor] = field(default_factory=list)
    prompts_used: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def is_image(self) -> bool:
        return self.frames is not None and len(self.frames) == 1

    def save(self, path: str | Path) -> Path:
        """Write ``.mp4`` / ``.gif`` (a video) or ``.png`` (an image), atomically, with the generation settings in
        its metadata (one JSON record, prompts cut to ``METADATA_PROMPT_CHARS``; read it back with
        :func:`infinitystar.generation.settings.read_settings`)."""
        if self.frames is None:
            raise ValueError(
                "this result holds latents only (output_type='latent', or a rank other than 0 of a parallel "
                "generation); nothing to save as media"
            )
        frames = torch.as_tensor(np.asarray(self.frames))
        record = self.settings or {**prompt_fields("prompt", self.prompt), "mode": self.mode, "seed": int(self.seed)}
        return write_video(path, frames, fps=self.fps, metadata=metadata_tags(record))
