"""The caption a training sample gets, chosen as the original did, from an explicit per-item generator.

In order (fixed for a whole epoch, since the generator is seeded by ``(seed, epoch, item)``):

1. choice: a video uses ``tarsier2_caption``, or, when ``MiniCPM_V_2_6_caption`` is present, either of the two with
   probability 1/2; an image uses its short ``text`` with probability ``short_cap_prob`` (0.3), else its
   ``long_caption`` (whichever exists when only one does);
2. sentence dropping (``dynamic_length``, the original's ``enable_dynamic_length_prompt``): with probability
   ``short_prob`` (0.3) keep only the first ``k`` sentences, ``k ~ U{1..n}``, sentences ending at '.';
3. ``' ' + quality_prompt`` appended when the item has one;
4. the ``<<<t=Ns>>>`` duration prefix (no space after it) for videos, from
   :func:`infinitystar.text.prompts.duration_tag`, the function inference uses, so the two cannot drift apart. Images
   get no prefix, as at inference for text-to-image (the original tagged everything as video; images were effectively
   untrainable there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from infinitystar import config_dicts
from infinitystar.text.prompts import duration_tag
from infinitystar.train.seeds import derive_seed, make_generator

_SENTENCE_END = re.compile(r"\.+")


@dataclass(frozen=True)
class CaptionOptions:
    """How training captions are built (defaults: the released training scripts)."""

    alt_caption_prob: float = 0.5  #: video: P(MiniCPM caption) when it exists
    short_cap_prob: float = 0.3  #: image: P(short caption 'text') when both exist
    dynamic_length: bool = True  #: sentence dropping on/off
    short_prob: float = 0.3  #: P(drop sentences) when dynamic_length is on
    quality_prompt: bool = True  #: append the item's quality_prompt
    duration_prefix: bool = True  #: prepend <<<t=Ns>>> to videos

    def __post_init__(self) -> None:
        for name in ("alt_caption_prob", "short_cap_prob", "short_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"CaptionOptions.{name} must be a probability in [0, 1], got {value!r}")


def caption_options(value: CaptionOptions | dict | None) -> CaptionOptions:
    """``CaptionOptions`` from itself, a dict (e.g. a JSON training config) or None (the defaults)."""
    if value is None:
        return CaptionOptions()
    if isinstance(value, CaptionOptions):
        return value
    if isinstance(value, dict):
        return config_dicts.from_dict(CaptionOptions, value, what="caption options")
    raise ValueError(f"captions must be CaptionOptions or a dict of its fields, got {type(value).__name__}")


def item_seed(seed: int, epoch: int, key: str, purpose: str = "") -> int:
    """The seed of one item's ``purpose`` draws in one epoch: :func:`~infinitystar.train.seeds.derive_seed` of
    ``(seed, epoch, key, purpose)``, the same on every machine and Python run."""
    return derive_seed(int(seed), int(epoch), str(key), str(purpose))


def item_generator(seed: int, epoch: int, key: str, purpose: str = "", device: str | torch.device = "cpu"):
    """A ``torch.Generator`` seeded by :func:`item_seed`."""
    return make_generator(device, int(seed), int(epoch), str(key), str(purpose))


def sentence_bounds(text: str) -> list[int]:
    """End offsets of the sentences of ``text`` (a sentence ends at a run of '.'; trailing text counts as one)."""
    bounds = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        if text[start : m.start()].strip():
            bounds.append(m.end())
            start = m.end()
    if text[start:].strip():
        bounds.append(len(text))
    return bounds


def keep_sentences(text: str, k: int) -> str:
    """The first ``k`` sentences of ``text`` (all of it when ``k`` >= their number)."""
    bounds = sentence_bounds(text)
    if k >= len(bounds):
        return text
    return text[: bounds[k - 1]].strip()


def choose_caption(
    kind: str, caption: str, alt_caption: str | None, options: CaptionOptions, generator: torch.Generator
) -> str:
    """Step 1 (choice) and step 2 (sentence dropping); draws three uniforms from ``generator`` whatever happens."""
    u = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
    if alt_caption:
        if kind == "video":
            text = alt_caption if u[0] < options.alt_caption_prob else caption
        else:
            text = caption if u[0] < options.short_cap_prob else alt_caption
    else:
        text = caption
    if options.dynamic_length and u[1] < options.short_prob:
        n = len(sentence_bounds(text))
        if n > 1:
            text = keep_sentences(text, 1 + min(int(u[2] * n), n - 1))
    return text


def decorate(text: str, quality_prompt: str | None, duration: int, options: CaptionOptions) -> str:
    """Steps 3 and 4: quality prompt and duration prefix (``duration = 0`` for an image: no prefix)."""
    if options.quality_prompt and quality_prompt:
        text = f"{text} {quality_prompt}"
    if options.duration_prefix and duration > 0:
        text = duration_tag(int(duration)) + text
    return text


def training_caption(
    kind: str,
    caption: str,
    alt_caption: str | None,
    quality_prompt: str | None,
    duration: int,
    options: CaptionOptions,
    generator: torch.Generator,
) -> str:
    """The final caption of one sample for one epoch."""
    return decorate(choose_caption(kind, caption, alt_caption, options, generator), quality_prompt, duration, options)


def candidate_captions(
    kind: str,
    caption: str,
    alt_caption: str | None,
    quality_prompt: str | None,
    duration: int,
    options: CaptionOptions | None = None,
) -> list[str]:
    """Every final caption a sample can get when sentence dropping is off: what a text-feature cache stores."""
    options = options if options is not None else CaptionOptions()
    texts = [caption] + ([alt_caption] if alt_caption and alt_caption != caption else [])
    return [decorate(t, quality_prompt, duration, options) for t in texts]
