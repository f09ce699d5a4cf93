"""``infinitystar extract``: fill a latent cache from manifests (see :mod:`infinitystar.train.data.extract`).

Under ``torchrun`` every process takes ``items[RANK::WORLD_SIZE]`` and, with ``--device cuda``, the GPU
``LOCAL_RANK``; no collective communication is needed, so ranks never wait for each other. Rerunning the same
command resumes: finished items are skipped.
"""

from __future__ import annotations

import argparse

from infinitystar.cli.model_options import add_hub_arguments, hub_options
from infinitystar.launch import torchrun_env

DTYPES = ("float32", "bfloat16", "float16")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "extract",
        help="encode the media of training manifests into a latent cache (resumable)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--manifest", nargs="+", required=True, help="jsonl manifest(s) or folder(s) of *.jsonl")
    p.add_argument("--out", required=True, help="cache folder (created; rerun with the same settings to resume)")
    p.add_argument(
        "--vae",
        required=True,
        help="VAE: the released .pth, a .safetensors (original keys), a model folder, or a repo id "
        "(FoundationVision/InfinityStar: only the VAE is downloaded)",
    )
    p.add_argument(
        "--resolution",
        default="480p",
        help="480p (default), 720p, a budget such as 0.40M, scales:K (small multi-aspect sizes) or HxW (fixed)",
    )
    p.add_argument("--max-frames", type=int, default=81, help="longest clip in 16 fps frames, 1 + 4k (default 81)")
    p.add_argument("--min-frames", type=int, default=17, help="shorter clips are skipped (default 17 = 1 s)")
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="VAE compute dtype (default float32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the posterior noise (per item)")
    p.add_argument(
        "--posterior",
        choices=("sample", "mean"),
        default="sample",
        help="sample the VAE posterior like the original (default) or use its mean",
    )
    p.add_argument("--t5", default=None, help="local T5 folder: also store text features of each candidate caption")
    p.add_argument("--workers", type=int, default=2, help="threads decoding upcoming items (default 2)")
    p.add_argument("--max-new", type=int, default=None, help="stop after caching this many new items")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_hub_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import logging
    import sys

    import torch

    from infinitystar.devices import parse_dtype, resolve_device
    from infinitystar.hub import resolve
    from infinitystar.models.vae.model import VideoVAE
    from infinitystar.train.data.extract import extract_latents
    from infinitystar.train.data.preprocess import Resolution

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rank, world, local_rank = torchrun_env()
    resolution = Resolution.parse(args.resolution)  # fail before loading anything
    device = resolve_device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    vae_path = resolve(args.vae, ("vae",), None, hub_options(args))  # a repo id: its VAE only
    vae = VideoVAE.from_original_checkpoint(vae_path, device=device).to(dtype=parse_dtype(args.dtype))
    text_encoder = None
    if args.t5:
        from infinitystar.text.encoders import T5TextEncoder

        text_encoder = T5TextEncoder(args.t5, device=device)
    summary = extract_latents(
        args.manifest,
        args.out,
        vae,
        resolution=resolution,
        max_frames=args.max_frames,
        min_frames=args.min_frames,
        seed=args.seed,
        posterior=args.posterior,
        rank=rank,
        world_size=world,
        text_encoder=text_encoder,
        workers=args.workers,
        max_new=args.max_new,
        progress=not args.quiet,
    )
    where = f" (rank {rank} of {world})" if world > 1 else ""
    print(f"extract{where}: {summary}", flush=True)
    if summary.failures:
        print(f"failures{where} (also in {args.out}/failures-rank{rank:05d}.json):", file=sys.stderr)
        for item, reason in summary.failures[:20]:
            print(f"  {item}: {reason}", file=sys.stderr)
        if len(summary.failures) > 20:
            print(f"  ... {len(summary.failures) - 20} more", file=sys.stderr)
    return 0
