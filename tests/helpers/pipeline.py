"""A tiny random model in the released folder layout, and generation settings small enough for CPU tests.

``make_released_layout(root)`` writes what the FoundationVision/InfinityStar release holds, with tiny random weights:
``infinitystar_8b_480p_weights/`` (sharded safetensors + index), ``infinitystar_videovae.pth`` and a tiny T5 with its
tokenizer in ``text_encoder/flan-t5-xl-official/``. ``TINY_PIPELINE`` generates 128x128 videos of 17 frames (two
clips of 2 latent frames) over 8 scales, so a whole video takes well under a second on one core.
"""

from __future__ import annotations

from pathlib import Path

import torch

from infinitystar.generation.plan import PipelineConfig
from infinitystar.models.config import TransformerConfig, VAEConfig
from infinitystar.models.transformer.checkpoint import save_original_transformer
from infinitystar.models.transformer.model import InfinityTransformer
from infinitystar.models.vae.checkpoint import save_original_vae_checkpoint
from infinitystar.models.vae.model import VideoVAE
from tests.helpers.t5 import TINY_T5_CHANNELS, make_tiny_t5

TINY_TRANSFORMER = TransformerConfig(
    embed_dim=64, depth=2, num_heads=2, num_kv_heads=1, mlp_hidden=128, block_chunks=2, text_channels=TINY_T5_CHANNELS
)
TINY_VAE = VAEConfig(block_out_channels=(4, 8, 8, 8, 8), layers_per_block=1, mid_layers=1)
TINY_PIPELINE = PipelineConfig(
    resolution="0.016M",
    max_duration=1,
    default_duration=1,
    frames_per_clip=2,
    detail_scale_min_tokens=16,
    aspect_ratio="1:1",
    guidance_scale=3.0,
    sample_posterior=False,
)


def tiny_models(seed: int = 0) -> tuple[InfinityTransformer, VideoVAE]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = InfinityTransformer(TINY_TRANSFORMER)
        transformer.reset_parameters(torch.Generator().manual_seed(seed))
        vae = VideoVAE(TINY_VAE)
    return transformer.eval(), vae.eval()


def make_released_layout(root: str | Path, seed: int = 0) -> Path:
    """Write the released layout with tiny random weights under ``root``; return ``root``."""
    root = Path(root)
    transformer, vae = tiny_models(seed)
    save_original_transformer(transformer, root / "infinitystar_8b_480p_weights", max_shard_bytes=100_000)
    save_original_vae_checkpoint(vae, root / "infinitystar_videovae.pth")
    make_tiny_t5(root / "text_encoder" / "flan-t5-xl-official", seed=seed)
    return root
