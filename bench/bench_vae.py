"""Throughput and peak memory of the video VAE's encode and decode.

    python bench/bench_vae.py [--device cpu|cuda] [--widths tiny|small|full] [--repeats N]

Prints one row per (operation, video size, chunk setting): seconds per call, video frames per
second, and the peak memory the call needed on top of the model and its input. On CPU each row
runs in a fresh subprocess and the figure is the growth of the peak resident set size
(``ru_maxrss``); on CUDA it is ``torch.cuda.max_memory_allocated`` above the baseline.
Weights are random (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from infinitystar.models.config import VAEConfig
from infinitystar.models.vae.model import VideoVAE

WIDTHS = {
    "tiny": (8, 16, 16, 16, 16),
    "small": (16, 32, 64, 64, 64),
    "full": (96, 192, 384, 384, 384),  # the released VAE
}

# (operation, frames, height, width, chunk) per widths; chunk None = the default
# (8 frames / 2 latents), 0 = the whole video at once
_SMALL_PLAN = [
    ("encode", 17, 128, 128, 4),
    ("encode", 17, 128, 128, None),
    ("encode", 17, 128, 128, 0),
    ("decode", 17, 128, 128, 1),
    ("decode", 17, 128, 128, None),
    ("decode", 17, 128, 128, 0),
    ("encode", 33, 256, 256, None),
    ("decode", 33, 256, 256, None),
]
PLANS = {
    "tiny": _SMALL_PLAN,
    "small": _SMALL_PLAN,
    "full": [
        ("encode", 9, 64, 64, None),
        ("decode", 9, 64, 64, None),
        ("encode", 17, 128, 128, None),
        ("encode", 17, 128, 128, 0),
        ("decode", 17, 128, 128, None),
        ("decode", 17, 128, 128, 0),
    ],
}


def _current_mib(device: str) -> float:
    """Memory in use now: CUDA allocations, or the process's resident set size."""
    if device == "cuda":
        return torch.cuda.memory_allocated() / 2**20
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib(device: str) -> float:
    """High-water mark: CUDA peak allocation since the reset, or the peak resident set size."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_case(widths: str, op: str, T: int, H: int, W: int, chunk: int | None, device: str, repeats: int) -> dict:
    """Time one (operation, size, chunk) case; returns seconds per call and peak extra MiB."""
    torch.manual_seed(0)
    vae = VideoVAE(VAEConfig(block_out_channels=WIDTHS[widths])).to(device).eval()
    with torch.inference_mode():
        if op == "encode":
            video = torch.rand(1, 3, T, H, W, device=device) * 2 - 1
            size = max(T - 1, 4) if chunk == 0 else chunk  # >= T - 1: one chunk

            def call():
                return vae.encode(video, sample=False, chunk_frames=size)
        else:
            t, sf = vae.num_latent_frames(T), vae.spatial_factor
            latent = torch.randn(1, vae.cfg.token_channels, t, H // sf, W // sf, device=device)
            size = max(t - 1, 1) if chunk == 0 else chunk

            def call():
                return vae.decode(latent, chunk_latents=size)

        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        base = _current_mib(device)
        call()  # warm-up (oneDNN / cuDNN plans)
        times = []
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = call()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            del out
        peak = _peak_mib(device) - base
    return {"sec": min(times), "peak_mib": peak}


def _run_in_subprocess(args: argparse.Namespace, case: tuple) -> dict:
    """CPU peak RSS is per process, so every case gets a fresh one."""
    op, T, H, W, chunk = case
    cmd = [sys.executable, __file__, "--_child", json.dumps([args.widths, op, T, H, W, chunk])]
    cmd += ["--device", args.device, "--repeats", str(args.repeats)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode:
        raise RuntimeError(f"benchmark case {case} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--widths", choices=sorted(WIDTHS), default="small")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per case (the fastest is reported)")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")

    if args._child:
        widths, op, T, H, W, chunk = json.loads(args._child)
        print(json.dumps(run_case(widths, op, T, H, W, chunk, args.device, args.repeats)))
        return

    vae = VideoVAE(VAEConfig(block_out_channels=WIDTHS[args.widths]))
    n_params = sum(p.numel() for p in vae.parameters())
    del vae
    dev = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    mem = "peak alloc" if args.device == "cuda" else "peak RSS+"
    print(f"VideoVAE widths={args.widths} {WIDTHS[args.widths]} ({n_params / 1e6:.2f} M params), float32")
    print(f"device: {dev}; torch {torch.__version__}; best of {args.repeats} after a warm-up")
    print()
    header = f"| {'op':6} | {'video T x H x W':16} | {'chunk':20} | {'s/call':>7} | {'frames/s':>8} | {mem:>10} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for case in PLANS[args.widths]:
        op, T, H, W, chunk = case
        if args.device == "cuda":
            r = run_case(args.widths, op, T, H, W, chunk, args.device, args.repeats)
        else:
            r = _run_in_subprocess(args, case)
        unit = "frames" if op == "encode" else "latents"
        label = "whole" if chunk == 0 else f"{chunk or ('8' if op == 'encode' else '2')} {unit}"
        label += " (default)" if chunk is None else ""
        size, fps, peak = f"{T} x {H} x {W}", T / r["sec"], f"{r['peak_mib']:.0f} MiB"
        print(f"| {op:6} | {size:16} | {label:20} | {r['sec']:7.3f} | {fps:8.1f} | {peak:>10} |", flush=True)


if __name__ == "__main__":
    main()
