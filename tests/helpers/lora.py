"""Random LoRA adapter folders for a transformer config (peft's format, written without peft)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from infinitystar.models.config import TransformerConfig
from infinitystar.models.transformer.lora import BLOCK_TARGETS
from infinitystar.models.transformer.lora_files import write_adapter


def _shapes(cfg: TransformerConfig) -> dict[str, tuple[int, int]]:
    """(in, out) of every targeted linear of a block."""
    c, hd = cfg.embed_dim, cfg.head_dim
    return {
        "attn.q_proj": (c, cfg.num_heads * hd),
        "attn.k_proj": (c, cfg.num_kv_heads * hd),
        "attn.v_proj": (c, cfg.num_kv_heads * hd),
        "attn.o_proj": (cfg.num_heads * hd, c),
        "mlp.gate_proj": (c, cfg.mlp_hidden),
        "mlp.up_proj": (c, cfg.mlp_hidden),
        "mlp.down_proj": (cfg.mlp_hidden, c),
    }


def make_adapter(
    folder: str | Path,
    cfg: TransformerConfig,
    *,
    seed: int = 0,
    rank: int = 4,
    alpha: float = 8.0,
    strength: float = 1.0,
    name: str | None = None,
    record_architecture: bool = True,
) -> Path:
    """An adapter folder on every block linear of ``cfg``, B drawn non-zero (``strength`` sets its size) so that it
    changes what the model generates."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for block in range(cfg.depth):
        for module, (fan_in, fan_out) in _shapes(cfg).items():
            key = f"blocks.{block}.{module}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(rank, fan_in, generator=g) / math.sqrt(fan_in)
            tensors[f"{key}.lora_B.weight"] = torch.randn(fan_out, rank, generator=g) * strength
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": list(BLOCK_TARGETS)}
    meta = {"name": name, "transformer": cfg.to_dict()} if record_architecture else {}
    if name is None:
        meta.pop("name", None)
    return write_adapter(folder, tensors, config, meta)
