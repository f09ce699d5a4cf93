"""Analytic estimate of the GPU memory a generation needs (what ``infinitystar info`` prints).

An estimate from shapes, not a measurement: it counts the transformer's weights, the text
encoder, the KV cache this implementation keeps (the text plus the last repetition of every
scale a later scale attends to, see :class:`~infinitystar.models.transformer.model.KVCache`), the largest
activations of one block at the largest step, and the VAE: its weights and its decode in the VAE's own
precision (fp32 by default, as the original), which runs after the transformer's cache is freed, so the
peak is the larger of the two phases. It leaves out the allocator's fragmentation. ``bench/`` measures the
real peak on a GPU; this is for planning (which card fits which resolution).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from infinitystar.models.config import TransformerConfig, VAEConfig
from infinitystar.schedule import Schedule

#: parameters of the Flan-T5-XL encoder the released models use
T5_XL_ENCODER_PARAMS = 1.22e9
GIB = 1024**3


#: parameters of the released video VAE (encoder 54.72 M, decoder 129.92 M)
RELEASED_VAE_PARAMS = 184_659_383
#: full-resolution tensors the decoder holds at once in its last stage (the input of the final norm, the norm's
#: output and its SiLU; the pixel shuffle before it holds its input and output, as many values)
_DECODE_LIVE_TENSORS = 3


@dataclass(frozen=True)
class MemoryEstimate:
    weights: float  #: transformer weights (bytes)
    text_encoder: float  #: T5 in fp16 (0 when offloaded)
    kv_cache: float  #: peak cached keys and values
    activations: float  #: largest live activations of one block
    total: float
    vae_weights: float = 0.0  #: VAE weights in the VAE's dtype
    vae_decode: float = 0.0  #: the decode's largest activations plus the decoded video, in the VAE's dtype

    def gib(self) -> dict[str, float]:
        keys = ("weights", "text_encoder", "kv_cache", "activations", "vae_weights", "vae_decode", "total")
        return {k: getattr(self, k) / GIB for k in keys}


def vae_decode_bytes(
    vae: VAEConfig, schedule: Schedule, bytes_per_value: int = 4, chunk_latents: int = 2
) -> tuple[float, float]:
    """(activations, decoded video) of the chunked VAE decode of one window, in bytes.

    The decoder runs ``chunk_latents`` latent frames at a time (``VideoVAE.decode``'s default); the first chunk also
    carries latent frame 0, so it is the largest: ``1 + chunk_latents * temporal factor`` frames. Its largest
    tensors are those of the last stage at full resolution, ``block_out_channels[0]`` channels wide (96 in the
    release). The whole decoded video is preallocated.
    """
    t = max(sc.frame_end for sc in schedule.scales)  # latent frames of the window
    h, w = schedule.pixel_hw
    frames_per_latent = math.prod(vae.temporal_compression)
    chunk_frames = 1 + min(chunk_latents, t - 1) * frames_per_latent
    activations = _DECODE_LIVE_TENSORS * vae.block_out_channels[0] * chunk_frames * h * w * bytes_per_value
    video = vae.out_channels * (1 + frames_per_latent * (t - 1)) * h * w * bytes_per_value
    return float(activations), float(video)


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
    vae: VAEConfig | None = None,
    vae_bytes_per_value: int = 4,
    vae_params: float = RELEASED_VAE_PARAMS,
) -> MemoryEstimate:
    """Peak memory of one window's generation, in bytes (bf16 weights and activations by default).

    ``mlp_chunk_tokens``: if the MLP runs over chunks of this many tokens, its hidden activations
    are bounded by the chunk instead of the whole scale. ``vae``: count the VAE (weights and decode) in
    ``vae_bytes_per_value`` (4: fp32, the default and the original's; 2: bf16); None leaves it out.
    """
    rows = 2 if guidance else 1
    b = bytes_per_value
    c, kvw, h = cfg.embed_dim, cfg.num_kv_heads * cfg.head_dim, cfg.mlp_hidden
    weights = transformer_params(cfg) * b
    text = 0.0 if offload_text_encoder else text_encoder_params * 2
    per_token_kv = 2 * kvw * b * cfg.depth * rows  # K and V of every layer
    users = [schedule.last_user(s.index) for s in schedule.scales]
    largest = max(s.num_tokens for s in schedule.scales)
    peak_kv = 0.0
    for sc in schedule.scales:
        # while sc runs: the text, every earlier scale a later one still needs, and sc itself if it is needed later
        held = [r for r in range(sc.index + 1) if users[r] >= sc.index and (r < sc.index or users[r] > sc.index)]
        cached = text_tokens + sum(schedule.scales[r].num_tokens for r in held)
        peak_kv = max(peak_kv, cached * per_token_kv)
    n = largest * rows
    mlp_tokens = n if mlp_chunk_tokens is None else min(n, mlp_chunk_tokens * rows)
    attention = n * (4 * c + 2 * kvw) * b  # residual, normed input, q, attention output + this layer's k, v
    mlp = n * 2 * c * b + mlp_tokens * 4 * h * b  # residual, normed input + gate, up, silu(gate), product
    activations = max(attention, mlp)
    vae_weights = vae_decode = 0.0
    if vae is not None:
        vae_weights = vae_params * vae_bytes_per_value
        vae_decode = sum(vae_decode_bytes(vae, schedule, vae_bytes_per_value))
    # the decode runs after generation has released its cache and activations: the larger phase is the peak
    total = weights + text + vae_weights + max(peak_kv + activations, vae_decode)
    return MemoryEstimate(weights, text, peak_kv, activations, total, vae_weights, vae_decode)
