"""Analytic estimate of the GPU memory a generation needs (what ``infinitystar info`` prints).

An estimate from shapes, not a measurement: it counts the transformer's weights, the text
encoder, the KV cache this implementation keeps (the text plus the last repetition of every
scale a later scale attends to, see :class:`~infinitystar.models.transformer.model.KVCache`) and the largest
activations of one block at the largest step. It leaves out the VAE decode (chunked, bounded by
two latent frames at a time) and the allocator's fragmentation. ``bench/`` measures the real
peak on a GPU; this is for planning (which card fits which resolution).

For one video on several processes (``generation.parallel``) it estimates one process: sequence parallel over K
divides the KV cache (sharded by key/value head) and the per-token activations by K, adding the all-to-all's
buffers; guidance parallel keeps one row per process; FSDP keeps 1/N of the blocks' weights plus two gathered
blocks (the running one and the next, whose gather overlaps). The logits rank 0 gathers (fp32, 2 x 128 per token,
74 MB at 720p) are left out, as the single process's own logits are.
"""

from __future__ import annotations

from dataclasses import dataclass

from infinitystar.models.config import TransformerConfig
from infinitystar.schedule import Schedule

#: parameters of the Flan-T5-XL encoder the released models use
T5_XL_ENCODER_PARAMS = 1.22e9
GIB = 1024**3


@dataclass(frozen=True)
class MemoryEstimate:
    weights: float  #: transformer weights (bytes)
    text_encoder: float  #: T5 in fp16 (0 when offloaded)
    kv_cache: float  #: peak cached keys and values
    activations: float  #: largest live activations of one block
    total: float

    def gib(self) -> dict[str, float]:
        return {k: getattr(self, k) / GIB for k in ("weights", "text_encoder", "kv_cache", "activations", "total")}


def block_matmul_params(cfg: TransformerConfig) -> int:
    """Weights of one block's matrix products: q and o, k and v, the SwiGLU's three projections."""
    c, hd = cfg.embed_dim, cfg.head_dim
    return 2 * c * cfg.num_heads * hd + 2 * c * cfg.num_kv_heads * hd + 3 * c * cfg.mlp_hidden


def transformer_params(cfg: TransformerConfig) -> int:
    """Parameter count (Qwen blocks without biases, text projection, embeddings, both heads)."""
    c, hd = cfg.embed_dim, cfg.head_dim
    block = block_matmul_params(cfg) + 2 * c + 2 * hd  # + the block's four norms
    outer = cfg.text_maxlen * cfg.text_channels + (cfg.text_channels + 1) * c + c  # null text, text_proj, sos
    outer += (cfg.latent_channels + 1) * c + c  # word_embed, final norm
    outer += (c + 1) * 2 * (cfg.detail_dim + cfg.semantic_dim)  # both heads
    return block * cfg.depth + outer


def estimate_generation_memory(
    cfg: TransformerConfig,
    schedule: Schedule,
    *,
    bytes_per_value: int = 2,
    guidance: bool = True,
    text_tokens: int = 512,
    text_encoder_params: float = T5_XL_ENCODER_PARAMS,
    offload_text_encoder: bool = False,
    mlp_chunk_tokens: int | None = None,
    sp_size: int = 1,
    cfg_parallel: bool = False,
    fsdp: bool = False,
) -> MemoryEstimate:
    """Peak memory of one window's generation, in bytes (bf16 weights and activations by default); with
    ``sp_size`` / ``cfg_parallel`` / ``fsdp``, of one of the processes that generate it together.

    ``mlp_chunk_tokens``: if the MLP runs over chunks of this many tokens, its hidden activations
    are bounded by the chunk instead of the whole scale.
    """
    rows = 1 if cfg_parallel or not guidance else 2  # rows this process computes
    b = bytes_per_value
    c, kvw, h = cfg.embed_dim, cfg.num_kv_heads * cfg.head_dim, cfg.mlp_hidden
    weights = float(transformer_params(cfg) * b)
    if fsdp:  # the blocks sharded over every process, two of them gathered at a time
        world = sp_size * (2 if cfg_parallel else 1)
        block = (block_matmul_params(cfg) + 2 * c + 2 * cfg.head_dim) * b
        weights += cfg.depth * block * (1 / world - 1) + 2 * block
    text = 0.0 if offload_text_encoder else text_encoder_params * 2
    per_token_kv = 2 * kvw * b * cfg.depth * rows / sp_size  # K and V of every layer, this process's heads
    users = [schedule.last_user(s.index) for s in schedule.scales]
    largest = max(s.num_tokens for s in schedule.scales)
    peak_kv = 0.0
    for sc in schedule.scales:
        # while sc runs: the text, every earlier scale a later one still needs, and sc itself if it is needed later
        held = [r for r in range(sc.index + 1) if users[r] >= sc.index and (r < sc.index or users[r] > sc.index)]
        cached = text_tokens + sum(schedule.scales[r].num_tokens for r in held)
        peak_kv = max(peak_kv, cached * per_token_kv)
    n = -(-largest // sp_size) * rows  # this process's tokens of the largest scale
    mlp_tokens = n if mlp_chunk_tokens is None else min(n, mlp_chunk_tokens * rows)
    attention = n * (4 * c + 2 * kvw) * b  # residual, normed input, q, attention output + this layer's k, v
    if sp_size > 1:  # the all-to-all's send copies and received tensors of q, k, v
        attention += 2 * n * (c + 2 * kvw) * b
    mlp = n * 2 * c * b + mlp_tokens * 4 * h * b  # residual, normed input + gate, up, silu(gate), product
    activations = max(attention, mlp)
    total = weights + text + peak_kv + activations
    return MemoryEstimate(weights, text, peak_kv, activations, total)
