"""What a pipeline's tokenizer alone keeps of a video, and the PSNR that measures it (shared by pipeline tests)."""

from __future__ import annotations

import numpy as np
import torch

from infinitystar.evaluation.metrics import psnr  # noqa: F401 - the one PSNR, re-exported for the pipeline tests
from infinitystar.generation.pipeline import InfinityStarPipeline
from infinitystar.models.quantizer import decode_bits, encode_pyramid
from infinitystar.sizes import latent_frames


def round_trip(pipe: InfinityStarPipeline, frames: np.ndarray) -> np.ndarray:
    """uint8 ``frames [T, H, W, 3]`` through VAE encode (posterior mean) -> the pipeline's bit pyramid -> decode."""
    video = torch.from_numpy(frames).float().div(127.5).sub(1).permute(3, 0, 1, 2)[None]  # [1, 3, T, H, W]
    sched = pipe.schedule(1.0, latent_frames(frames.shape[0]))
    with torch.no_grad():
        latent = pipe.vae.encode(video, sample=False)
        x = pipe.vae.decode(decode_bits(encode_pyramid(latent, sched).bits, sched)).clamp(-1, 1)[0]
    return ((x.permute(1, 2, 3, 0) + 1) * 127.5).round().byte().numpy()  # [T, H, W, 3]
