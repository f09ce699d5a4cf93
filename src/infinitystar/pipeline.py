"""Deprecated: ``infinitystar.pipeline`` was the pipeline's module before the package was split by stage.

Import from the package instead: ``from infinitystar import InfinityStarPipeline`` (or from
:mod:`infinitystar.generation.pipeline`). This alias keeps code written for 0.1.0 working and will be removed in a
later release.
"""

from __future__ import annotations

import warnings

from infinitystar.generation.layouts import BUILTIN_MODEL_DIR, MODEL_INDEX, BuiltinModelMissing
from infinitystar.generation.output import GenerationResult
from infinitystar.generation.pipeline import InfinityStarPipeline
from infinitystar.generation.plan import RELEASED_CONFIGS, PipelineConfig, Window, plan_windows, resolve_duration

warnings.warn(
    "infinitystar.pipeline is deprecated: use `from infinitystar import InfinityStarPipeline` "
    "(the module is now infinitystar.generation.pipeline)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "BUILTIN_MODEL_DIR",
    "MODEL_INDEX",
    "RELEASED_CONFIGS",
    "BuiltinModelMissing",
    "GenerationResult",
    "InfinityStarPipeline",
    "PipelineConfig",
    "Window",
    "plan_windows",
    "resolve_duration",
]
