"""Peak memory and time of ``infinitystar convert`` on a synthetic multi-GB checkpoint in the original format.

    python bench/bench_convert.py [--gb 4] [--shards 4] [--dir /tmp/convert_bench] [--keep]

Writes a released-layout folder in ``--dir``: ``infinitystar_8b_480p_weights/`` with ``--shards`` fp32 safetensors
shards + ``model.safetensors.index.json`` (a 2048-wide transformer, depth chosen to reach ``--gb``; random values),
a tiny VAE ``.pth`` and a placeholder text-encoder folder. Then runs ``infinitystar convert`` (bf16) in a fresh
process and prints the source size, its largest shard and tensor, the output size, the wall time and the child's
peak resident set size (``ru_maxrss``, which counts the source shard's memory-mapped pages being read), next to the
peak of a process that only imports the package. Everything is deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from infinitystar.checkpoints import stream_safetensors
from infinitystar.models.config import TransformerConfig, VAEConfig
from infinitystar.models.transformer.checkpoint import expected_original_shapes
from infinitystar.models.vae.checkpoint import save_original_vae_checkpoint
from infinitystar.models.vae.model import VideoVAE

GB = 1e9


def synthetic_config(gb: float) -> TransformerConfig:
    """A 2048-wide transformer (16 heads, 4 KV heads, SwiGLU 8192) deep enough to weigh ``gb`` in fp32."""
    base = dict(embed_dim=2048, num_heads=16, num_kv_heads=4, mlp_hidden=8192, text_channels=2048)
    per_block = sum(
        torch.Size(s).numel() * 4
        for k, s in expected_original_shapes(TransformerConfig(depth=1, block_chunks=1, **base)).items()
        if k.startswith("block_chunks.")
    )
    depth = max(2, round(gb * GB / per_block))
    return TransformerConfig(depth=depth, block_chunks=depth, **base)


def write_source(root: Path, gb: float, shards: int) -> dict:
    """The released layout with random fp32 weights, written one tensor at a time (nothing big in memory)."""
    cfg = synthetic_config(gb)
    shapes = expected_original_shapes(cfg)
    keys = list(shapes)
    total = sum(torch.Size(s).numel() * 4 for s in shapes.values())
    weights = root / "infinitystar_8b_480p_weights"
    weight_map, start, g = {}, 0, torch.Generator().manual_seed(0)
    for i in range(shards):
        end, size = start, 0
        while end < len(keys) and (size < total / shards or i == shards - 1):
            size += torch.Size(shapes[keys[end]]).numel() * 4
            end += 1
        part = keys[start:end]
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        specs = {k: (torch.float32, shapes[k]) for k in part}
        stream_safetensors(weights / name, specs, ((k, torch.randn(shapes[k], generator=g)) for k in part))
        weight_map.update(dict.fromkeys(part, name))
        start = end
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (weights / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    save_original_vae_checkpoint(
        VideoVAE(VAEConfig(block_out_channels=(8, 16, 16, 16, 16))), root / "infinitystar_videovae.pth"
    )
    t5 = root / "text_encoder" / "flan-t5-xl-official"
    t5.mkdir(parents=True)
    (t5 / "config.json").write_text("{}")
    largest = max(torch.Size(s).numel() * 4 for s in shapes.values())
    return {"cfg": cfg, "bytes": total, "largest_tensor": largest, "shards": shards}


def child_peak(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in bytes) of a fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    return wall, usage.ru_maxrss * 1024  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=4.0, help="size of the synthetic fp32 transformer (default 4)")
    ap.add_argument("--shards", type=int, default=4, help="source shards (default 4)")
    ap.add_argument("--dir", default="/tmp/convert_bench", help="work folder (deleted afterwards)")
    ap.add_argument("--keep", action="store_true", help="keep the files")
    args = ap.parse_args()
    work = Path(args.dir)
    need = 1.6 * args.gb * GB
    free = shutil.disk_usage(work.parent if not work.exists() else work).free
    if free < need:
        raise SystemExit(f"{work}: {free / GB:.1f} GB free, the bench needs about {need / GB:.1f} GB")
    shutil.rmtree(work, ignore_errors=True)
    try:
        src = write_source(work / "released", args.gb, args.shards)
        shard_sizes = [p.stat().st_size for p in (work / "released").rglob("model-*.safetensors")]
        _, base = child_peak([sys.executable, "-c", "import torch, infinitystar.cli, infinitystar.generation.convert"])
        cmd = [sys.executable, "-m", "infinitystar.cli", "convert", str(work / "released"), str(work / "out")]
        wall, peak = child_peak(cmd)
        out = sum(p.stat().st_size for p in (work / "out" / "transformer").glob("*.safetensors"))
        cols = ("source (fp32)", "shards", "largest shard", "largest tensor", "output (bf16)", "wall", "peak RSS")
        print("| " + " | ".join((*cols, "import only")) + " |")
        print("|---|---|---|---|---|---|---|---|")
        print(
            f"| {src['bytes'] / GB:.2f} GB ({src['cfg'].depth} blocks x 2048) | {len(shard_sizes)} | "
            f"{max(shard_sizes) / GB:.2f} GB | {src['largest_tensor'] / 1e6:.0f} MB | {out / GB:.2f} GB | "
            f"{wall:.1f} s | {peak / GB:.2f} GB | {base / GB:.2f} GB |"
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
