"""Data curation: turn folders of videos and images into a training manifest (``infinitystar curate``).

Probe -> scene cuts -> clip filters (duration, fps, shorter side, motion) -> frame scorers (built-in brightness,
black frames, blur; plug-ins loading local weights) -> captions (a local vision-language model, or existing
captions) -> a jsonl manifest in the original InfinityStar format, with a report of what was dropped and why.
Resumable and parallel; see ``outputs`` for the output files and ``filters`` for every default threshold.
"""

from __future__ import annotations

import importlib

# Names are imported on first use (PEP 562), so ``infinitystar --help`` (which imports ``curate.cli``) stays light.
_EXPORTS = {
    "Captioner": "captioner",
    "CaptionerSpec": "captioner",
    "VLMCaptioner": "captioner",
    "parse_captioner_spec": "captioner",
    "CurateConfig": "filters",
    "Drop": "filters",
    "MediaError": "infinitystar.media.probe",
    "MediaInfo": "infinitystar.media.probe",
    "probe_media": "infinitystar.media.probe",
    "InputItem": "inputs",
    "collect_inputs": "inputs",
    "format_report": "outputs",
    "run_curate": "runner",
    "ScoreFilter": "scorers",
    "Scorer": "scorers",
    "ScorerSpec": "scorers",
    "build_scorer": "scorers",
    "parse_scorer_spec": "scorers",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        module = _EXPORTS[name]  # a submodule of this package, or a full module path
        return getattr(importlib.import_module(module if "." in module else f"{__name__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Captioner",
    "CaptionerSpec",
    "CurateConfig",
    "Drop",
    "InputItem",
    "MediaError",
    "MediaInfo",
    "ScoreFilter",
    "Scorer",
    "ScorerSpec",
    "VLMCaptioner",
    "build_scorer",
    "collect_inputs",
    "format_report",
    "parse_captioner_spec",
    "parse_scorer_spec",
    "probe_media",
    "run_curate",
]
