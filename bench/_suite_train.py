"""Training runs for the suite's FSDP2 check: the real trainer (``infinitystar.train.transformer.trainer``) on the
tiny preset with synthetic latents, inside a one-rank process group opened in this process (NCCL on CUDA, gloo on
the CPU; a file store, no network), so that the model is sharded with FSDP2 and checkpoints go through DCP exactly
as under ``torchrun``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from infinitystar.checkpoints import read_safetensors
from infinitystar.train.distributed import DistEnv
from infinitystar.train.transformer.config import TrainConfig
from infinitystar.train.transformer.trainer import Trainer

#: 4 steps, a checkpoint every 2; dense attention (FlexAttention has its own check) keeps the run deterministic
RECIPE = {
    "model": {"preset": "tiny", "attn_impl": "dense"},
    "schedule": {
        "scales": [[1, 1], [2, 2], [4, 4], [8, 8]],
        "image_repetition": [1, 2, 2, 1],
        "video_repetition": [1, 2, 1, 1],
        "detail_scale_min_tokens": 16,
    },
    "data": {"synthetic": {"num_samples": 6, "latent_frames": [1, 5], "latent_hw": [8, 8], "text_len": 6}},
    "optim": {"lr": 1e-3, "lr_schedule": "cosine", "warmup_steps": 2, "ema_decay": 0.95},
    "steps": 4,
    "save_every": 2,
    "keep": 2,
    "log": {"progress": False, "tensorboard": False},
}


def _train(device: torch.device, out: Path, resume: bool = False) -> dict:
    cfg = TrainConfig.from_dict({**RECIPE, "device": str(device), "out": str(out), "resume": resume})
    trainer = Trainer(cfg, env=DistEnv(device=device))
    sharded = type(trainer.module.transformer.blocks[0]).__name__  # FSDP2 renames the class: FSDP<Block>
    result = trainer.train()
    weights = read_safetensors(result.final_model / "model.safetensors")
    return {"losses": result.losses, "weights": weights, "sharded": f"blocks are {sharded}"}


def fsdp_runs(device: torch.device, work: Path) -> tuple[dict, dict, dict]:
    """(uninterrupted run, the same again, the first resumed from its step-2 checkpoint): losses per step, final
    weights and how the blocks were wrapped."""
    if dist.is_initialized():
        raise RuntimeError("a process group is already open in this process")
    kwargs = {"device_id": torch.device("cuda", torch.cuda.current_device())} if device.type == "cuda" else {}
    store = dist.FileStore(str(work / "store"), 1)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=store, rank=0, world_size=1, **kwargs)
    saved = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)  # deterministic kernels where PyTorch has them
    try:
        full = _train(device, work / "full")
        again = _train(device, work / "again")
        resumed_dir = work / "resumed"
        resumed_dir.mkdir()
        shutil.copytree(work / "full" / "step_00000002", resumed_dir / "step_00000002")
        resumed = _train(device, resumed_dir, resume=True)
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        dist.destroy_process_group()
    return full, again, resumed
