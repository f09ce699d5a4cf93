"""FLOP count of a generation's transformer work, for the hardware floor the benchmarks compare to.

A multiply-add counts as 2 FLOPs. Counted: every matrix product of the text prefill and of every
step that runs (the linear layers of all blocks, attention's ``QK^T`` and ``PV`` over the keys the
step really sees, the input embedding and the head). Not counted: norms, RoPE, softmax, sampling
(elementwise, far below 1% at any size) and the VAE. The floor of a device is
``flops / measured matmul rate``: the time a perfect implementation would take if every FLOP ran at
the speed of one large GEMM.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

from infinitystar.generation.memory import block_matmul_params
from infinitystar.models.config import TransformerConfig
from infinitystar.schedule import Schedule


@dataclass(frozen=True)
class GenerationFlops:
    """FLOPs of one window: ``prefill`` (the text) and one entry per step (0 for a skipped step)."""

    prefill: float
    steps: tuple[float, ...]

    @property
    def total(self) -> float:
        return self.prefill + sum(self.steps)

    def of_steps(self, indices) -> float:
        return sum(self.steps[i] for i in indices)


def block_linear_flops(cfg: TransformerConfig, tokens: int) -> float:
    """Linear-layer FLOPs of one block over ``tokens`` tokens (q, k, v, o and the SwiGLU MLP)."""
    return 2.0 * tokens * block_matmul_params(cfg)


def attention_flops(cfg: TransformerConfig, queries: int, keys: int) -> float:
    """``QK^T`` and ``PV`` of one block: ``2 * 2 * queries * keys * H * hd``."""
    return 4.0 * queries * keys * cfg.num_heads * cfg.head_dim


def generation_flops(
    cfg: TransformerConfig,
    schedule: Schedule,
    *,
    rows: int = 2,
    text_tokens: int = 512,
    skipped: Container[int] = (),
) -> GenerationFlops:
    """FLOPs of one window's transformer work: the text prefill and every step not in ``skipped``.

    ``rows``: 2 with guidance (cond + uncond), 1 without. A step of a scale with N tokens attends to
    ``text + its reference scales + its own N`` keys (see :class:`~infinitystar.models.transformer.model.KVCache`).
    """
    if rows < 1 or text_tokens < 1:
        raise ValueError(f"rows and text_tokens must be >= 1, got {rows} and {text_tokens}")
    depth = cfg.depth
    prefill = 2.0 * text_tokens * cfg.text_channels * cfg.embed_dim  # text_proj
    prefill += depth * (block_linear_flops(cfg, text_tokens) + attention_flops(cfg, text_tokens, text_tokens))
    steps = []
    for st in schedule.steps:
        if st.index in skipped:
            steps.append(0.0)
            continue
        sc = schedule.scales[st.scale]
        n = sc.num_tokens
        keys = text_tokens + sum(schedule.scales[r].num_tokens for r in sc.ref_scales) + n
        f = 2.0 * n * cfg.latent_channels * cfg.embed_dim  # word_embed
        f += depth * (block_linear_flops(cfg, n) + attention_flops(cfg, n, keys))
        f += 2.0 * n * cfg.embed_dim * 2 * schedule.bits(sc.index)  # head: 2 logits per bit
        steps.append(rows * f)
    return GenerationFlops(rows * prefill, tuple(steps))
