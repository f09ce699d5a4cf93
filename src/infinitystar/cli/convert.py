"""``infinitystar convert``: a released model folder (or repo id) -> our layout, the transformer in bf16.

Examples::

    infinitystar convert FoundationVision/InfinityStar infinitystar-480p-bf16 --resolution 480p
    infinitystar convert /data/InfinityStar infinitystar-720p-fp32 --dtype fp32
    infinitystar convert /data/InfinityStar my-finetune --resolution 480p --transformer run/global_step_4000.pth

The transformer's shards are streamed one at a time and cast (35 GB -> 17.5 GB in bf16); the VAE is written in fp32
and the text encoder hard-linked (copied across file systems); the result appears only when complete. Load it with
``--checkpoint DST`` or ``InfinityStarPipeline.from_pretrained(DST)``: it gives exactly the logits of the released
folder loaded in the same dtype.
"""

from __future__ import annotations

import argparse

from infinitystar.cli.model_options import add_hub_arguments, hub_options


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="released model folder or repo id -> our layout (transformer in bf16, streamed shard by shard)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", help="released model folder, one of its weights folders, or a repo id (ORG/NAME)")
    p.add_argument("dst", help="new folder for our layout (must not exist or be empty)")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16", help="transformer blocks (default bf16)")
    p.add_argument("--resolution", choices=("480p", "720p"), help="which weights (default 720p when both are there)")
    p.add_argument(
        "--transformer", help="fine-tuned transformer weights to convert instead (the original's global_step_N.pth)"
    )
    p.add_argument("--copy", action="store_true", help="copy the text encoder instead of hard-linking it")
    add_hub_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from infinitystar.devices import parse_dtype
    from infinitystar.generation.convert import convert_released

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("infinitystar").setLevel(logging.INFO)  # what was skipped, shard progress
    report = convert_released(
        args.src,
        args.dst,
        dtype=parse_dtype(args.dtype),
        resolution=args.resolution,
        transformer_weights=args.transformer,
        hub=hub_options(args),
        link=not args.copy,
    )
    print(
        f"converted {args.src} ({report.resolution}) -> {report.folder}: transformer {args.dtype}, "
        f"{report.transformer_bytes / 1e9:.2f} GB in {report.shards} shard(s)"
        + (f"; skipped {len(report.skipped)} unknown entries" if report.skipped else "")
    )
    return 0
