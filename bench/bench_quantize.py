"""Weight-only quantization against full precision: how far the logits move, how many sampled bits would change,
how much smaller the blocks get.

    python bench/bench_quantize.py                                   # CPU: tiny and small presets, int8 vs fp32
    python bench/bench_quantize.py --device cuda --dtype bf16 --quantize int8 fp8 --model small 8b

Every step of one generation is run teacher-forced with the full-precision model's own bits, so each step of the
quantized model sees the same input and the error is that of one step, not a diverged trajectory. Printed per model:
the relative error of the logits (||q - f|| / ||f|| over a step; the worst and the mean step), the share of bits
whose most likely value (the sign of l1 - l0) differs, and the bytes of the blocks' weights before and after.
"""

from __future__ import annotations

import argparse

import torch

from _common import random_transformer
from infinitystar.devices import parse_dtype
from infinitystar.generation.loop import generate_latent
from infinitystar.models.transformer.quantize import block_weight_bytes, quantize_transformer
from infinitystar.schedule import build_schedule


def step_logits(model, schedule, text, forced=None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    seen = []
    out = generate_latent(
        model,
        schedule,
        text,
        generator=torch.Generator(device=model.device).manual_seed(0),
        forced_bits=forced,
        exact_forcing=forced is not None,
        on_step=lambda r: seen.append(r.logits.float()),
    )
    return seen, out.bits


def compare(preset: str, mode: str, device: torch.device, dtype: torch.dtype, resolution: str, frames: int) -> dict:
    model = random_transformer(preset, device, dtype)
    schedule = build_schedule(1.0, resolution, frames, detail_scale_min_tokens=100)
    g = torch.Generator().manual_seed(1)
    text = torch.randn(32, model.cfg.text_channels, generator=g).to(device)
    _, bits = step_logits(model, schedule, text)
    full, _ = step_logits(model, schedule, text, bits)
    full_bytes = block_weight_bytes(model)
    quantize_transformer(model, mode)
    quant, _ = step_logits(model, schedule, text, bits)
    errors = [float((q - f).norm() / f.norm()) for q, f in zip(quant, full)]
    flipped = sum(
        int(((q[..., 1::2] > q[..., ::2]) != (f[..., 1::2] > f[..., ::2])).sum()) for q, f in zip(quant, full)
    )
    total = sum(f[..., ::2].numel() for f in full)
    return {
        "max": max(errors),
        "mean": sum(errors) / len(errors),
        "flipped": flipped / total,
        "before": full_bytes,
        "after": block_weight_bytes(model),
        "steps": len(errors),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="+", default=["tiny", "small"])
    ap.add_argument("--quantize", nargs="+", default=["int8"], choices=("int8", "fp8"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32")
    ap.add_argument("--resolution", default="0.06M", help="schedule budget (default 0.06M: 256x256)")
    ap.add_argument("--latent-frames", type=int, default=5, help="latent frames (default 5: 17 frames)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    device = torch.device(args.device)
    dtype = parse_dtype(args.dtype)
    print(
        f"logits of {args.quantize} vs {args.dtype} on {device}, {args.resolution}, {args.latent_frames} latent frames"
    )
    print("| model | quantize | steps | logits rel. error, worst step | mean step | bits flipped | block weights |")
    print("|---|---|---:|---:|---:|---:|---|")
    for preset in args.model:
        for mode in args.quantize:
            r = compare(preset, mode, device, dtype, args.resolution, args.latent_frames)
            smaller = 100 * (1 - r["after"] / r["before"])
            print(
                f"| {preset} | {mode} | {r['steps']} | {r['max']:.4f} | {r['mean']:.4f} | {100 * r['flipped']:.2f}% | "
                f"{r['before'] / 2**20:.1f} -> {r['after'] / 2**20:.1f} MiB ({smaller:.0f}% smaller) |"
            )


if __name__ == "__main__":
    main()
