"""``infinitystar world``: write the procedural world to disk, list its prompts, score generated videos.

    infinitystar world write --out data/world -n 10000 [--split train] [--frames 17] [--size 128] [--seed 0]
    infinitystar world write --out data/pink -n 1000 --colors pink          # a colour the default world lacks
    infinitystar world prompts --split heldout -n 36 [--image] [--colors pink] > heldout.txt
    infinitystar world eval MANIFEST [--json report.json]

``eval`` reads a jsonl manifest of ``{"path": ..., "caption": ...}`` lines (paths relative to the manifest's folder;
optionally ``"reference"``: an image for first-frame PSNR) and prints the prompt-following accuracy.
Light to import: the torch-heavy modules load inside the commands.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers) -> None:
    world = subparsers.add_parser(
        "world", help="procedural video world: write data, list prompts, evaluate generated videos"
    )
    actions = world.add_subparsers(dest="world_action", required=True)

    write = actions.add_parser("write", help="write N world videos (mp4) / images (png) and a manifest.jsonl")
    write.add_argument("--out", required=True, help="output folder (created if needed)")
    write.add_argument("-n", "--num", type=int, required=True, help="number of items")
    write.add_argument("--split", default="train", choices=["train", "heldout"])
    write.add_argument("--frames", type=int, default=17, help="frames per video, 1 + 4k (default 17: 1 s at 16 fps)")
    write.add_argument("--size", type=int, nargs="+", default=[128], help="SIZE or HEIGHT WIDTH, multiples of 16")
    write.add_argument("--seed", type=int, default=0)
    write.add_argument("--image-fraction", type=float, default=0.0, help="fraction of single-frame image items")
    write.add_argument(
        "--size-range", type=float, nargs=2, metavar=("LO", "HI"), help="object side, fractions of the frame"
    )
    write.add_argument(
        "--travel-range", type=float, nargs=2, metavar=("LO", "HI"), help="distance moved, fractions of the frame"
    )
    _add_colors(write)
    write.set_defaults(func=_write)

    prompts = actions.add_parser("prompts", help="print N balanced world captions of a split, one per line")
    prompts.add_argument("--split", default="heldout", choices=["train", "heldout"])
    prompts.add_argument("-n", "--num", type=int, default=36)
    prompts.add_argument("--seed", type=int, default=0)
    prompts.add_argument("--image", action="store_true", help="image captions (no motion)")
    _add_colors(prompts)
    prompts.set_defaults(func=_prompts)

    ev = actions.add_parser("eval", help="score videos listed in a manifest against their captions")
    ev.add_argument("manifest", help='jsonl with {"path": ..., "caption": ...[, "reference": image]} lines')
    ev.add_argument("--json", help="also write the summary and per-video reports to this JSON file")
    ev.set_defaults(func=_eval)


def _add_colors(parser) -> None:
    from infinitystar.world.scenes import NEW_COLORS

    parser.add_argument(
        "--colors",
        help="comma-separated object colours to draw from (default: the default world's eight); new colours, "
        f"with their own held-out split: {', '.join(NEW_COLORS)}",
    )


def _colors(text: str | None) -> tuple[str, ...] | None:
    from infinitystar.world.scenes import check_colors

    return None if text is None else check_colors(tuple(c.strip().lower() for c in text.split(",") if c.strip()))


def _write(args: argparse.Namespace) -> int:
    from infinitystar.world.dataset import write_world
    from infinitystar.world.scenes import WorldSpec

    if len(args.size) not in (1, 2):
        raise ValueError("--size takes SIZE or HEIGHT WIDTH")
    size = args.size[0] if len(args.size) == 1 else tuple(args.size)
    spec = WorldSpec.with_ranges(args.frames, size, args.size_range, args.travel_range, _colors(args.colors))
    manifest = write_world(args.out, args.num, args.seed, args.split, spec, image_fraction=args.image_fraction)
    print(f"wrote {args.num} items and {manifest}")
    return 0


def _prompts(args: argparse.Namespace) -> int:
    from infinitystar.world.captions import prompts

    for text in prompts(args.split, args.num, args.seed, image=args.image, colors=_colors(args.colors)):
        print(text)
    return 0


def _read_manifest(path: Path) -> list[dict]:
    if not path.is_file():
        raise ValueError(f"manifest not found: {path}")
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or "caption" not in entry:
            raise ValueError(f'{path}:{number}: expected {{"path": ..., "caption": ...}}, got {line[:120]!r}')
        entries.append(entry)
    if not entries:
        raise ValueError(f"{path} lists no videos")
    return entries


def _eval(args: argparse.Namespace) -> int:
    from infinitystar.files import write_json
    from infinitystar.media import IMAGE_SUFFIXES, read_image, read_video
    from infinitystar.world.evaluate import evaluate

    manifest = Path(args.manifest)
    entries = _read_manifest(manifest)
    root = manifest.parent

    def load(name: str):
        path = root / name
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return read_image(path)[:, None]  # [3, H, W] -> [3, 1, H, W]
        return read_video(path)  # [3, T, H, W] in [-1, 1]

    videos = [load(e["path"]) for e in entries]
    references = [load(e["reference"]) if e.get("reference") else None for e in entries]
    summary = evaluate(videos, [e["caption"] for e in entries], references=references)
    print(summary)
    if args.json:
        write_json(args.json, json.loads(json.dumps(summary.to_dict(with_reports=True), default=str)), indent=1)
    return 0
