"""``infinitystar info --resolution R --duration S [--gpu-memory G]``: the 8B model's estimated GPU memory under every
dtype / ``--quantize`` / ``--offload`` setting, fastest first, and the fastest one that fits a card."""

from __future__ import annotations

import argparse

PLAN_RESOLUTIONS = ("480p", "720p")


def _check(args: argparse.Namespace) -> tuple[str, float]:
    resolution = args.resolution or "720p"
    if resolution not in PLAN_RESOLUTIONS:
        raise ValueError(f"--resolution {resolution!r} is not a released resolution; accepted: 480p, 720p")
    if args.gpu_memory is not None and not args.gpu_memory > 0:
        raise ValueError(f"--gpu-memory is the card's memory in GiB (e.g. 24), got {args.gpu_memory}")
    if args.token_chunk is not None and args.token_chunk < 0:
        raise ValueError(f"--token-chunk must be >= 0 (0 = whole scales), got {args.token_chunk}")
    return resolution, 5.0 if args.duration is None else args.duration


def print_plan(args: argparse.Namespace) -> int:
    from infinitystar.generation.memory import GIB, HEADROOM_GIB, fastest_fitting, fits, plan_settings
    from infinitystar.generation.plan import RELEASED_CONFIGS
    from infinitystar.models.config import VAEConfig, get_preset
    from infinitystar.schedule import build_schedule
    from infinitystar.sizes import latent_frames, parse_aspect_ratio, video_frames_for_duration

    resolution, seconds = _check(args)
    frames = video_frames_for_duration(seconds)
    window = min(seconds, RELEASED_CONFIGS[resolution].max_duration)  # longer videos run window after window
    shown = video_frames_for_duration(window)
    sched = build_schedule(parse_aspect_ratio(args.aspect_ratio), resolution, latent_frames(shown))
    chunk = args.token_chunk or None
    rows = plan_settings(
        get_preset("8b").transformer, sched, VAEConfig(), guidance=not args.no_guidance, mlp_chunk_tokens=chunk
    )
    h, w = sched.pixel_hw
    what = "an image" if seconds == 0 else f"{seconds:g} s ({frames} frames)"
    print(
        f"8B at {resolution} ({h}x{w}), {what}, {'no guidance' if args.no_guidance else 'guidance (2 rows)'}, "
        f"{f'token chunks of {chunk}' if chunk else 'whole scales'}"
    )
    if window != seconds:
        print(f"  (windows of {window:g} s: the {resolution} model's trained length; memory is per window)")
    print("GPU memory in GiB, an analytic estimate (not a measurement), fastest setting first:")
    head = ("setting", "weights", "text enc", "KV cache", "activ.", "VAE", "decode", "peak")
    print(f"  {head[0]:<62}" + "".join(f"{c:>9}" for c in head[1:]) + ("  fits" if args.gpu_memory else ""))
    for r in rows:
        g = r.estimate.gib()
        values = (g["weights"], g["text_encoder"], g["kv_cache"], g["activations"], g["vae"], g["decode"], g["total"])
        fit = ("  yes" if fits(r, args.gpu_memory) else "  no") if args.gpu_memory else ""
        print(f"  {r.flags():<62}" + "".join(f"{v:>9.1f}" for v in values) + fit)
    print(
        "weights: the transformer on the GPU (every block, or the two resident with --offload blocks; int8/fp8 blocks"
        "\n  at 1 byte per weight); peak = weights + text encoder + VAE + max(KV cache + activations, decode)."
        "\n  fp8 needs compute capability 8.9+ (L4, RTX 40xx, H100); the speed order is an assumption until measured."
        + (
            f"\n  fits: peak + {HEADROOM_GIB:g} GiB (CUDA context, fragmentation) <= {args.gpu_memory:g} GiB."
            if args.gpu_memory
            else ""
        )
    )
    if args.gpu_memory:
        best = fastest_fitting(rows, args.gpu_memory)
        if best is None:
            smallest = min(rows, key=lambda r: r.estimate.total)
            print(
                f"\nNothing fits in {args.gpu_memory:g} GiB; the smallest is {smallest.flags()} "
                f"({smallest.estimate.total / GIB:.1f} GiB)"
            )
        else:
            print(
                f"\nFastest setting that fits {args.gpu_memory:g} GiB: {best.flags()} "
                f"({best.estimate.total / GIB:.1f} GiB estimated)"
            )
    return 0
