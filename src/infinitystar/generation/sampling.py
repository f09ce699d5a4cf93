"""Temperature, guidance and bit sampling: pure functions over logits.

Logits of a step are ``[R, N, 2d]``: R rows (row 0 conditional, row 1 unconditional when guidance
is on), N tokens, and d bit pairs where ``[..., 2j]`` / ``[..., 2j + 1]`` are the logits of bit j
being 0 / 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

GUIDANCE_METHODS = ("apg", "cfg", "none")
SAMPLERS = ("multinomial", "bernoulli")


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance settings.

    ``method``: 'apg' (adaptive projected guidance, the released default), 'cfg' (plain
    classifier-free guidance) or 'none'. ``scale`` is the strength g (1 = no guidance).
    APG clips the cond-uncond difference to an RMS of ``apg_norm_threshold`` and keeps only its
    part orthogonal to the conditional logits (plus ``apg_eta`` times the parallel part).
    """

    method: str = "apg"
    scale: float = 34.0
    apg_norm_threshold: float = 0.05
    apg_eta: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in GUIDANCE_METHODS:
            raise ValueError(f"unknown guidance {self.method!r}; accepted: {', '.join(GUIDANCE_METHODS)}")
        if not math.isfinite(self.scale):
            raise ValueError(f"guidance scale must be finite, got {self.scale}")

    @property
    def active(self) -> bool:
        return self.method != "none" and self.scale != 1


def apply_temperature(logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Multiply by ``1/tau`` (the original multiplies by the reciprocal, which rounds differently)."""
    if not tau > 0:
        raise ValueError(f"temperature must be > 0, got {tau}")
    return logits * (1.0 / tau)


def cfg_guidance(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Plain classifier-free guidance ``g * cond + (1 - g) * uncond``."""
    return cond * scale + (1 - scale) * uncond


def apg_guidance(
    cond: torch.Tensor, uncond: torch.Tensor, scale: float, norm_threshold: float = 0.05, eta: float = 0.0
) -> torch.Tensor:
    """Adaptive projected guidance on one step's logits ``[1, N, 2d]`` (norms over the whole slab)."""
    diff = cond - uncond
    if norm_threshold > 0:
        rms = diff.norm() / math.sqrt(diff.numel())
        diff = diff * torch.clamp(norm_threshold / rms, max=1.0)
    c64 = cond.double()
    unit = c64 / c64.norm()
    d64 = diff.double()
    parallel = (d64 * unit).sum() * unit
    orthogonal = (d64 - parallel).to(cond.dtype)
    update = orthogonal + eta * parallel.to(cond.dtype)
    return cond + (scale - 1) * update


def guide(logits: torch.Tensor, guidance: Guidance, scale: float | None = None) -> torch.Tensor:
    """Combine the rows of ``logits [R, N, 2d]`` into ``[1, N, 2d]``; ``scale`` overrides the strength."""
    g = guidance.scale if scale is None else scale
    if guidance.method == "none" or g == 1 or logits.shape[0] == 1:
        return logits[:1]
    cond, uncond = logits[0:1], logits[1:2]
    if guidance.method == "cfg":
        return cfg_guidance(cond, uncond, g)
    return apg_guidance(cond, uncond, g, guidance.apg_norm_threshold, guidance.apg_eta)


def sample_bits(
    logits: torch.Tensor, generator: torch.Generator | None = None, sampler: str = "multinomial"
) -> torch.Tensor:
    """Draw bits from guided logits ``[1, N, 2d]``; returns int64 ``[1, N, d]``.

    'multinomial' reproduces the original's draws exactly (softmax over each pair, then
    ``torch.multinomial`` with the same generator and call order). 'bernoulli' draws the same
    distribution, Bernoulli(sigmoid(l1 - l0)), with one uniform per bit; faster, other draws.
    """
    b, n, two_d = logits.shape
    pairs = logits.reshape(b, n * two_d // 2, 2)  # [1, N*d, 2]: (logit of 0, logit of 1) per bit
    if sampler == "multinomial":
        probs = pairs.softmax(dim=-1)
        bits = torch.multinomial(probs.view(-1, 2), num_samples=1, replacement=True, generator=generator)
    elif sampler == "bernoulli":
        p1 = torch.sigmoid(pairs[..., 1] - pairs[..., 0]).reshape(-1)
        bits = torch.rand(p1.shape, generator=generator, device=p1.device, dtype=p1.dtype) < p1
    else:
        raise ValueError(f"unknown sampler {sampler!r}; accepted: {', '.join(SAMPLERS)}")
    return bits.long().view(b, n, two_d // 2)
