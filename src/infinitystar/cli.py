"""The ``infinitystar`` command line: thin wrappers over the library."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .config import PRESETS
from .schedule import (
    RESOLUTIONS,
    SCHEDULE_SPECS,
    build_schedule,
    latent_frames,
    parse_aspect_ratio,
    pixel_size,
    video_frames_for_duration,
)


def _params(cfg) -> int:
    """Parameter count of a transformer config (Qwen blocks, no biases, two heads)."""
    c, hd, i = cfg.embed_dim, cfg.head_dim, cfg.mlp_hidden
    block = c * cfg.num_heads * hd * 2 + 2 * c * cfg.num_kv_heads * hd + 3 * c * i + 2 * c + 2 * hd
    rest = (
        cfg.text_maxlen * cfg.text_channels
        + (cfg.text_channels + 1) * c
        + c
        + (cfg.latent_channels + 1) * c
        + c
        + (c + 1) * 2 * (cfg.detail_dim + cfg.semantic_dim)
    )
    return block * cfg.depth + rest


def cmd_info(args: argparse.Namespace) -> int:
    h_div_w = parse_aspect_ratio(args.aspect_ratio)
    print(f"infinitystar {__version__}\n")
    print("Model presets")
    print(f"  {'name':<8} {'layers':>6} {'width':>6} {'heads':>5} {'kv':>3} {'mlp':>6} {'params':>9}  description")
    for p in PRESETS.values():
        t = p.transformer
        print(
            f"  {p.name:<8} {t.depth:>6} {t.embed_dim:>6} {t.num_heads:>5} {t.num_kv_heads:>3} "
            f"{t.mlp_hidden:>6} {_params(t) / 1e9:>8.3f}B  {p.description}"
        )
    print(f"\nSchedules at aspect ratio {args.aspect_ratio} (h/w {h_div_w:.3f})")
    print(f"  {'resolution':<10} {'pixels':>10} {'duration':>8} {'frames':>6} {'scales':>6} {'steps':>5} {'tokens':>8}")
    for res in RESOLUTIONS:
        for seconds in (0, 5, 10):
            frames = video_frames_for_duration(seconds)
            sched = build_schedule(h_div_w, res, latent_frames(frames))
            h, w = pixel_size(h_div_w, res)
            dur = "image" if seconds == 0 else f"{seconds} s"
            print(
                f"  {res:<10} {f'{h}x{w}':>10} {dur:>8} {frames:>6} {len(sched.scales):>6} "
                f"{sched.num_steps:>5} {sched.num_step_tokens():>8}"
            )
    print(f"\nReleased schedule settings: {', '.join(SCHEDULE_SPECS)}")
    return 0


# Subcommands that live next to the code they drive. Each module exposes
# ``add_parser(subparsers)``, which adds one sub-parser with ``set_defaults(func=...)``;
# ``func(args)`` returns the exit status. Keep those modules light to import (import torch-heavy
# code inside ``func``) so that ``infinitystar --help`` stays fast.
SUBCOMMAND_MODULES: tuple[str, ...] = ()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infinitystar", description=__doc__)
    parser.add_argument("--version", action="version", version=f"infinitystar {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="list model presets, resolutions, schedules")
    info.add_argument("--aspect-ratio", default="16:9", help="W:H, e.g. 16:9 (default), 1:1, 9:16")
    info.set_defaults(func=cmd_info)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"infinitystar: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
