"""InfinityStar: unified spacetime autoregressive image and video generation.

The package follows the data flow::

    text/          prompt -> decorated prompt -> text features (T5 or the built-in encoder)
    sizes, schedule  durations and aspect ratios -> the spacetime pyramid of scales (pure functions)
    models/        the networks: the bitwise quantizer, the causal video VAE, the autoregressive transformer
    generation/    a call planned into windows -> the scale-by-scale loop -> latents -> frames (the pipeline)
    media/         images and videos in and out
    world/, evaluation/, app/, curate/, train/, cli/   the procedural world, scoring, the web demo, data curation,
                   training (data, transformer, tokenizer) and the command line

The most used names are importable from here; they are loaded on first use (PEP 562), so ``import infinitystar``
stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "InfinityStarPipeline": "infinitystar.generation.pipeline",
    "PipelineConfig": "infinitystar.generation.plan",
    "ParallelConfig": "infinitystar.generation.parallel",
    "GenerationResult": "infinitystar.generation.output",
    "VideoVAE": "infinitystar.models.vae.model",
    "InfinityTransformer": "infinitystar.models.transformer.model",
    "TransformerConfig": "infinitystar.models.config",
    "VAEConfig": "infinitystar.models.config",
    "build_schedule": "infinitystar.schedule",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
