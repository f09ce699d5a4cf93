"""Logits of every step of one seeded generation: what the inference-option tests (token chunks, compile,
quantization) compare."""

from __future__ import annotations

import torch

from infinitystar.generation.loop import generate_latent
from infinitystar.models.transformer.model import InferenceOptions


def step_logits(model, schedule, text, options: InferenceOptions | None = None, forced=None):
    """``(logits of every step, bits)`` of one seeded generation under ``options`` (the model's are restored after).

    ``forced``: bits of every step (teacher forcing with ``exact_forcing``), so that each step sees the same input
    whatever ``options`` computes; without it a last-bit rounding difference can flip a sampled bit near its
    threshold and every later step would diverge for a reason unrelated to the options.
    """
    before = model.inference
    model.inference = options or InferenceOptions()
    seen = []
    try:
        out = generate_latent(
            model,
            schedule,
            text,
            generator=torch.Generator().manual_seed(3),
            forced_bits=forced,
            exact_forcing=forced is not None,
            on_step=lambda r: seen.append(r.logits),
        )
    finally:
        model.inference = before
    return seen, out.bits
