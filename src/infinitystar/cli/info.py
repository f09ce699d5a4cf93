"""``infinitystar info``: model presets, resolutions, schedules and the memory a generation needs."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    info = sub.add_parser(
        "info",
        help="list model presets, resolutions, schedules; plan the GPU memory of a generation",
        description="Without options: presets, resolutions and schedules. With --resolution, --duration or "
        "--gpu-memory: the 8B model's estimated GPU memory for every dtype / --quantize / --offload setting, and the "
        "fastest setting that fits the card.",
    )
    info.add_argument("--aspect-ratio", default="16:9", help="W:H, e.g. 16:9 (default), 1:1, 9:16")
    info.add_argument(
        "--vae-dtype", choices=("fp32", "bf16"), default="fp32", help="VAE precision the estimate counts (default fp32)"
    )
    plan = info.add_argument_group("memory plan (8B model, estimates)")
    plan.add_argument("--resolution", help="480p or 720p (default 720p when planning)")
    plan.add_argument("--duration", type=float, help="seconds of video, 0 = an image (default 5 when planning)")
    plan.add_argument("--gpu-memory", type=float, help="GiB of the card: name the fastest setting that fits")
    plan.add_argument("--token-chunk", type=int, default=8192, help="tokens per block chunk (0 = whole scales)")
    plan.add_argument("--no-guidance", action="store_true", help="one row instead of two (guidance off)")
    par = info.add_argument_group("memory per process of one video on several processes (see generate)")
    par.add_argument("--sp-size", type=int, default=1, metavar="K", help="sequence-parallel processes (default 1)")
    par.add_argument("--cfg-parallel", action="store_true", help="guidance parallel (2 x K processes)")
    par.add_argument("--fsdp", action="store_true", help="the blocks' weights sharded over the processes")
    info.set_defaults(func=run)


def _parallel_note(args: argparse.Namespace) -> tuple[dict, str]:
    """The estimate's parallel settings (checked against the 8B model's heads) and how the table says them."""
    from infinitystar.generation.parallel import ParallelConfig
    from infinitystar.models.config import get_preset
    from infinitystar.parallel import check_heads

    if args.sp_size < 1:
        raise ValueError(f"--sp-size must be >= 1, got {args.sp_size}")
    big = get_preset("8b").transformer
    check_heads(big.num_heads, big.num_kv_heads, args.sp_size)
    config = ParallelConfig(args.sp_size, args.cfg_parallel, args.fsdp)
    if not config.enabled:
        return {}, ""
    if config.world_size == 1:
        raise ValueError("--fsdp shards the weights over the processes of one video: add --sp-size K or --cfg-parallel")
    kw = {"sp_size": config.sp_size, "cfg_parallel": config.cfg_parallel, "fsdp": config.fsdp}
    return kw, (
        f"One video on {config.world_size} processes ({config.flags()}): memory of each process (sequence parallel "
        "divides the KV cache\nand the activations by K, guidance parallel computes one row, FSDP keeps 1/N of the "
        "blocks plus two gathered)."
    )


def run(args: argparse.Namespace) -> int:
    if args.resolution is not None or args.duration is not None or args.gpu_memory is not None:
        from infinitystar.cli.memory_plan import print_plan

        return print_plan(args)
    from infinitystar import __version__
    from infinitystar.generation.memory import estimate_generation_memory, transformer_params
    from infinitystar.models.config import PRESETS, VAEConfig, get_preset
    from infinitystar.models.transformer.block_runner import InferenceOptions
    from infinitystar.schedule import SCHEDULE_SPECS, build_schedule
    from infinitystar.sizes import RESOLUTIONS, latent_frames, parse_aspect_ratio, pixel_size, video_frames_for_duration

    h_div_w = parse_aspect_ratio(args.aspect_ratio)
    parallel, note = _parallel_note(args)
    print(f"infinitystar {__version__}\n")
    print("Model presets")
    print(f"  {'name':<8} {'layers':>6} {'width':>6} {'heads':>5} {'kv':>3} {'mlp':>6} {'params':>9}  description")
    for p in PRESETS.values():
        t = p.transformer
        print(
            f"  {p.name:<8} {t.depth:>6} {t.embed_dim:>6} {t.num_heads:>5} {t.num_kv_heads:>3} "
            f"{t.mlp_hidden:>6} {transformer_params(t) / 1e9:>8.3f}B  {p.description}"
        )
    print(f"\nSchedules at aspect ratio {args.aspect_ratio} (h/w {h_div_w:.3f})")
    print(
        f"  {'resolution':<10} {'pixels':>10} {'duration':>8} {'frames':>6} {'scales':>6} {'steps':>5} {'tokens':>8}"
        f"  {'8B GPU memory' + (' per process' if parallel else '') + ' (estimate)':>24}"
    )
    big = get_preset("8b").transformer
    chunk = InferenceOptions().token_chunk  # the MLP runs over chunks of this many tokens by default
    vae = dict(vae=VAEConfig(), vae_bytes_per_value=4 if args.vae_dtype == "fp32" else 2)
    for res in RESOLUTIONS:
        for seconds in (0, 5, 10):
            frames = video_frames_for_duration(seconds)
            sched = build_schedule(h_div_w, res, latent_frames(frames))
            h, w = pixel_size(h_div_w, res)
            dur = "image" if seconds == 0 else f"{seconds} s"
            mem = estimate_generation_memory(big, sched, mlp_chunk_tokens=chunk, **vae, **parallel).gib()
            lean = estimate_generation_memory(
                big, sched, offload_text_encoder=True, mlp_chunk_tokens=chunk, **vae, **parallel
            ).gib()
            print(
                f"  {res:<10} {f'{h}x{w}':>10} {dur:>8} {frames:>6} {len(sched.scales):>6} "
                f"{sched.num_steps:>5} {sched.num_step_tokens():>8}"
                f"  {mem['total']:>5.1f} GiB ({lean['total']:.1f} offloaded)"
            )
    print(
        "\nMemory: analytic estimate for the 8B model in bf16 with guidance (weights, T5-XL, KV cache, largest"
        f"\nblock activations with the MLP over chunks of {chunk} tokens; the VAE's weights and its chunked decode"
        f"\nin {args.vae_dtype}, after the transformer's cache is freed), not a measurement; 'offloaded' keeps T5 on"
        "\nthe CPU. Every setting (--quantize, --offload blocks): infinitystar info --resolution 720p --duration 5"
        " [--gpu-memory 24]"
    )
    if note:
        print(note)
    print(f"Released schedule settings: {', '.join(SCHEDULE_SPECS)}")
    from infinitystar.generation.layouts import BUILTIN_MODEL_DIR, MODEL_INDEX

    if (BUILTIN_MODEL_DIR / MODEL_INDEX).is_file():
        size = sum(f.stat().st_size for f in BUILTIN_MODEL_DIR.rglob("*") if f.is_file())
        print(f"Built-in default model: {BUILTIN_MODEL_DIR} ({size / 1e6:.1f} MB), used without --checkpoint")
    else:
        print("Built-in default model: not shipped in this installation; pass --checkpoint DIR to generate")
    return 0
