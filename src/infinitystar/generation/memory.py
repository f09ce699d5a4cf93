"""Analytic estimate of the GPU memory a generation needs, and the planner over dtype / quantize / offload that
``infinitystar info`` prints.

An estimate from shapes, not a measurement. It counts what lives on the device in each of the two phases and takes
the larger: the transformer phase (the weights on the device: every block, or with block offload the two that are
resident at a time, quantized blocks at one byte per weight plus per-row scales; the embeddings and heads in fp32;
the text encoder unless offloaded; the VAE's weights; the KV cache this implementation keeps, see
:class:`~infinitystar.models.transformer.attention.KVCache`; the largest activations of one block at the largest
step) and the VAE decode (the same resident weights, no cache, and the decoder's activations at full resolution for
one chunk of two latent frames, in the VAE's dtype, plus the decoded video). It leaves out the allocator's
fragmentation and CUDA's own context. ``bench/`` measures the real peak on a GPU; this is for planning (which card
fits which setting).

For one video on several processes (``generation.parallel``) it estimates one process: sequence parallel over K
divides the KV cache (sharded by key/value head) and the per-token activations by K, adding the all-to-all's
buffers; guidance parallel keeps one row per process; FSDP keeps 1/N of the blocks' weights plus two gathered
blocks (the running one and the next, whose gather overlaps). The logits rank 0 gathers (fp32, 2 x 128 per token,
74 MB at 720p) are left out, as the single process's own logits are.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

from infinitystar.models.config import TransformerConfig, VAEConfig
from infinitystar.schedule import Schedule

#: parameters of the Flan-T5-XL encoder the released models use
T5_XL_ENCODER_PARAMS = 1.22e9
GIB = 1024**3


#: bytes per value of the dtypes the planner considers
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
#: the VAE's live full-resolution tensors during its decode (input, normalised, conv input with its causal pad,
#: conv output of the last ResNet block)
VAE_LIVE_TENSORS = 4


@dataclass(frozen=True)
class MemoryEstimate:
    weights: float  #: transformer weights on the device (bytes): all, or the two resident blocks when offloaded
    text_encoder: float  #: T5 in fp16 (0 when offloaded)
    kv_cache: float  #: peak cached keys and values
    activations: float  #: largest live activations of one block
    vae: float = 0.0  #: the VAE's weights (0 when no VAE config was given)
    decode: float = 0.0  #: the VAE decode's activations and the decoded video
    total: float = 0.0  #: the peak: the larger of the transformer phase and the decode phase

    def gib(self) -> dict[str, float]:
        keys = ("weights", "text_encoder", "kv_cache", "activations", "vae", "decode", "total")
        return {k: getattr(self, k) / GIB for k in keys}


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


def block_weight_bytes_estimate(cfg: TransformerConfig, bytes_per_value: int, quantize: str | None = None) -> float:
    """One block's weights: matrices at ``bytes_per_value`` or, quantized (int8 / fp8), one byte per weight plus a
    scale (4 bytes) and a zero point (1 byte) per output row; the four norms at ``bytes_per_value``."""
    c, hd = cfg.embed_dim, cfg.head_dim
    norms = (2 * c + 2 * hd) * bytes_per_value
    if quantize is None:
        return block_matmul_params(cfg) * bytes_per_value + norms
    rows = cfg.num_heads * hd + 2 * cfg.num_kv_heads * hd + c + 2 * cfg.mlp_hidden + c
    return block_matmul_params(cfg) + rows * 5 + norms


@functools.lru_cache(maxsize=8)
def vae_params(vae: VAEConfig) -> int:
    """Parameters of the VAE (built once per config on the meta device: nothing is allocated)."""
    import torch

    from infinitystar.models.vae.model import VideoVAE

    with torch.device("meta"):
        return sum(p.numel() for p in VideoVAE(vae).parameters())


def decode_bytes(vae: VAEConfig, schedule: Schedule, bytes_per_value: int, chunk_latents: int = 2) -> float:
    """The VAE decode's peak activations: the last decoder stage (``block_out_channels[0]`` wide at full resolution)
    over the first chunk's frames (1 + 4 x ``chunk_latents``), :data:`VAE_LIVE_TENSORS` of them, plus the decoded
    video in the VAE's dtype and as fp32."""
    h, w = schedule.pixel_hw
    frames = 1 + 4 * min(chunk_latents, schedule.num_latent_frames - 1)  # an image decodes one frame
    live = VAE_LIVE_TENSORS * vae.block_out_channels[0] * frames * h * w * bytes_per_value
    video = 3 * (1 + 4 * (schedule.num_latent_frames - 1)) * h * w * (bytes_per_value + 4)
    return live + video


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
    quantize: str | None = None,
    offload_blocks: bool = False,
    vae: VAEConfig | None = None,
    vae_bytes_per_value: int = 4,
    sp_size: int = 1,
    cfg_parallel: bool = False,
    fsdp: bool = False,
) -> MemoryEstimate:
    """Peak memory of one window's generation, in bytes (bf16 weights and activations by default); with
    ``sp_size`` / ``cfg_parallel`` / ``fsdp``, of one of the processes that generate it together.

    ``mlp_chunk_tokens``: if the MLP runs over chunks of this many tokens, its hidden activations
    are bounded by the chunk instead of the whole scale. ``quantize`` ('int8' / 'fp8'): the blocks' matrices in
    8 bits. ``offload_blocks``: only two blocks on the device at a time. ``vae``: count the VAE's weights and
    decode, in ``vae_bytes_per_value`` (4: fp32, the default and the original's ``vae.float()``; 2: bf16).
    """
    rows = 1 if cfg_parallel or not guidance else 2  # rows this process computes
    b = bytes_per_value
    c, kvw, h = cfg.embed_dim, cfg.num_kv_heads * cfg.head_dim, cfg.mlp_hidden
    block = block_weight_bytes_estimate(cfg, b, quantize)
    outer = (transformer_params(cfg) - cfg.depth * (block_matmul_params(cfg) + 2 * c + 2 * cfg.head_dim)) * 4  # fp32
    if fsdp:  # the blocks sharded over every process, two of them gathered at a time
        world = sp_size * (2 if cfg_parallel else 1)
        resident_blocks = cfg.depth / world + 2
    else:
        resident_blocks = min(2, cfg.depth) if offload_blocks else cfg.depth
    weights = block * resident_blocks + outer
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
    vae_w = vae_params(vae) * vae_bytes_per_value if vae is not None else 0.0
    decode = decode_bytes(vae, schedule, vae_bytes_per_value) if vae is not None else 0.0
    resident = weights + text + vae_w
    total = resident + max(peak_kv + activations, decode)
    return MemoryEstimate(weights, text, peak_kv, activations, vae_w, decode, total)


@dataclass(frozen=True)
class Setting:
    """One row of the memory plan: a way to run and its estimate."""

    dtype: str
    quantize: str | None
    offload: str
    estimate: MemoryEstimate
    vae_dtype: str = "fp32"

    def flags(self) -> str:
        """The command-line flags of this setting."""
        parts = [f"--dtype {self.dtype}"]
        if self.quantize:
            parts.append(f"--quantize {self.quantize}")
        if self.offload != "none":
            parts.append(f"--offload {self.offload}")
        if self.vae_dtype != "fp32":
            parts.append(f"--vae-dtype {self.vae_dtype}")
        return " ".join(parts)

    def speed_rank(self) -> tuple:
        """Smaller is faster (an ordering, not a measurement, until the GPU suite times them): fp32 loses the bf16
        tensor cores; streaming blocks adds copies the small scales cannot hide; weight-only quantization adds a
        dequantization to every matrix product; text offload moves T5 once per prompt; fp16 and bf16 run alike and
        int8 is preferred to fp8 only because it runs on every GPU. The VAE stays in fp32 (the original's precision,
        so released-model outputs match it) unless only a bf16 VAE fits: it goes before text offload, which costs one
        copy of T5 per prompt."""
        blocks = self.offload in ("blocks", "all")
        text = self.offload in ("text", "all")
        return (
            self.dtype == "fp32",
            blocks,
            self.quantize is not None,
            self.vae_dtype != "fp32",
            text,
            self.dtype == "fp16",
            self.quantize == "fp8",
        )


def plan_settings(cfg: TransformerConfig, schedule: Schedule, vae: VAEConfig | None = None, **kwargs) -> list[Setting]:
    """Every combination of dtype (fp32, bf16, fp16), quantize (none, int8, fp8), offload (none, text, blocks, all)
    and, with a VAE, the VAE's dtype (fp32, bf16) with its estimate, fastest first (:meth:`Setting.speed_rank`);
    ``kwargs`` go to :func:`estimate_generation_memory` (``guidance``, ``mlp_chunk_tokens`` ...)."""
    rows = []
    vae_dtypes = ("fp32", "bf16") if vae is not None else ("fp32",)
    for dtype, quantize, offload, vae_dtype in itertools.product(
        DTYPE_BYTES, (None, "int8", "fp8"), _OFFLOADS, vae_dtypes
    ):
        est = estimate_generation_memory(
            cfg,
            schedule,
            bytes_per_value=DTYPE_BYTES[dtype],
            quantize=quantize,
            offload_text_encoder=offload in ("text", "all"),
            offload_blocks=offload in ("blocks", "all"),
            vae=vae,
            vae_bytes_per_value=DTYPE_BYTES[vae_dtype],
            **kwargs,
        )
        rows.append(Setting(dtype, quantize, offload, est, vae_dtype))
    return sorted(rows, key=lambda r: r.speed_rank())


#: GiB a card loses to the CUDA context and the allocator's fragmentation, kept free by the planner
HEADROOM_GIB = 1.0


def fits(setting: Setting, gpu_gib: float, headroom_gib: float = HEADROOM_GIB) -> bool:
    """Whether the estimate plus ``headroom_gib`` fits a card of ``gpu_gib`` GiB."""
    return setting.estimate.total + headroom_gib * GIB <= gpu_gib * GIB


def fastest_fitting(settings: list[Setting], gpu_gib: float, headroom_gib: float = HEADROOM_GIB) -> Setting | None:
    """The first (fastest) setting that :func:`fits` in ``gpu_gib`` GiB, or None."""
    return next((s for s in settings if fits(s, gpu_gib, headroom_gib)), None)


_OFFLOADS = ("none", "text", "blocks", "all")
