"""Time the KV-cached transformer steps of a generation, per scale, with peak memory.

CPU (default): the ``tiny`` and ``small`` presets over a short schedule (square, 0.06M budget,
a video clip of a few latent frames), random fp32 weights.

CUDA: ``--device cuda --preset 8b --resolution 480p`` builds the released architecture with
random bf16 weights (on the meta device, then materialised directly on the GPU) and times all
steps of the 480p 5 s schedule (81 steps, 2 guidance rows) fed with random inputs.

    python bench/bench_transformer.py
    python bench/bench_transformer.py --device cuda --preset 8b --resolution 480p
"""

from __future__ import annotations

import argparse
import resource

import torch

from _common import Clock, random_transformer
from infinitystar.models.transformer.model import InfinityTransformer
from infinitystar.schedule import Schedule, build_schedule


def _schedule(resolution: str | None, latent_frames: int) -> Schedule:
    if resolution:
        return build_schedule(9 / 16, resolution, latent_frames)
    return build_schedule(1.0, "0.06M", latent_frames, detail_scale_min_tokens=100)


def run(model: InfinityTransformer, schedule: Schedule, rows: int, text_len: int, device: torch.device) -> dict:
    """One generation's worth of steps; returns per-step times and memory figures."""
    cfg = model.cfg
    g = torch.Generator(device=device).manual_seed(1)
    text = torch.randn(text_len, cfg.text_channels, generator=g, device=device)
    clock = Clock(device)
    cache = model.new_cache(schedule, rows)
    text_rows = model.text_rows(text, guidance=rows == 2)
    prefill = clock(lambda: model.prefill_text(cache, text_rows))
    times, peak_cache = [], 0
    for st in schedule.steps:
        n = schedule.scales[st.scale].num_tokens
        codes = torch.randn(1, n, cfg.latent_channels, generator=g, device=device).expand(rows, -1, -1)
        times.append(clock(lambda st=st, codes=codes: model.step(cache, codes, schedule, st)))
        peak_cache = max(peak_cache, cache.nbytes())
    return {"prefill": prefill, "times": times, "peak_cache": peak_cache}


def _report(name: str, schedule: Schedule, res: dict, device: torch.device, rows: int) -> None:
    print(f"\n## {name}: {schedule.num_steps} steps, {schedule.num_step_tokens()} tokens per row, {rows} rows")
    print("| scale | (t, h, w) | tokens | kind | reps | ms / step |")
    print("|---:|---|---:|---|---:|---:|")
    for sc in schedule.scales:
        ts = [res["times"][st.index] for st in schedule.steps if st.scale == sc.index]
        kind = "semantic" if sc.semantic else "detail"
        print(
            f"| {sc.index} | {sc.shape} | {sc.num_tokens} | {kind} | {sc.repetitions} | {1e3 * sum(ts) / len(ts):.2f} |"
        )
    total = sum(res["times"])
    print(
        f"\ntext prefill {1e3 * res['prefill']:.1f} ms; all steps {total:.3f} s = "
        f"{schedule.num_steps / total:.1f} steps/s; peak KV cache {res['peak_cache'] / 2**20:.1f} MiB"
    )
    if device.type == "cuda":
        print(f"peak GPU memory allocated {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    else:
        print(f"peak process RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", action="append", help="model preset(s); default tiny and small (CPU) or 8b (CUDA)")
    ap.add_argument("--resolution", default=None, help="480p / 720p: the released schedule (default: short 0.06M)")
    ap.add_argument("--latent-frames", type=int, default=None, help="default 21 (5 s) with --resolution, else 5")
    ap.add_argument("--text-len", type=int, default=64)
    ap.add_argument("--rows", type=int, default=2, help="2 = guidance (cond + uncond), 1 = none")
    ap.add_argument("--dtype", default=None, help="float32 / bfloat16 (default: bf16 on CUDA, fp32 on CPU)")
    args = ap.parse_args()

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    presets = args.preset or (["8b"] if device.type == "cuda" else ["tiny", "small"])
    frames = args.latent_frames or (21 if args.resolution else 5)
    schedule = _schedule(args.resolution, frames)
    torch.set_grad_enabled(False)
    print(f"device {device}, dtype {dtype}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    for preset in presets:
        model = random_transformer(preset, device, dtype)
        warm = schedule.truncate_clips(1)
        run(model, warm, args.rows, args.text_len, device)  # warm-up: allocator, kernels
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        res = run(model, schedule, args.rows, args.text_len, device)
        _report(
            f"{preset} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params)",
            schedule,
            res,
            device,
            args.rows,
        )
        del model


if __name__ == "__main__":
    main()
