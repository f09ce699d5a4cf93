"""``infinitystar curate``: build a training manifest from a folder of videos and images (or a manifest)."""

from __future__ import annotations

import argparse

EPILOG = """\
steps: probe (PyAV) -> fps / shorter-side / duration filters -> scene cuts -> clips (too short dropped, long
scenes cut into --max-clip-duration windows) -> motion filter -> frame scorers on --sample-frames frames per
clip (built-in: brightness, black_frames, blur; plug-ins with --scorer) -> captions (--captioner, else an
existing caption, else the item goes to OUT.uncaptioned.jsonl) -> OUT (jsonl in the original's format),
OUT.report.json (what each filter dropped and why), OUT.state.jsonl (progress; --resume continues from it).

scorer specs: NAME or package.module:Class, then comma-separated key=value options, e.g.
  --scorer blur,threshold=40          stricter built-in blur filter
  --scorer brightness,threshold=none  measure only, never drop
  --scorer "aesthetic,clip=/models/clip-vit-l-14,head=/models/aesthetic_head.safetensors,threshold=5"
  --scorer "my_pkg.ocr:TextArea,weights=/models/ocr.pt,threshold=0.05"
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "curate",
        help="filter, split and caption videos/images into a training manifest",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", help="folder (searched recursively), .jsonl manifest of paths, or one media file")
    p.add_argument("--out", required=True, help="output manifest (.jsonl)")
    _add_run_arguments(p.add_argument_group("run"))
    _add_filter_arguments(p.add_argument_group("filters"))
    _add_caption_arguments(p.add_argument_group("captions"))
    p.set_defaults(func=run)


def _add_run_arguments(runtime) -> None:
    """How the run is carried out (processes, resuming, progress): not settings, so a resumed run may change them."""
    runtime.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    runtime.add_argument("--resume", action="store_true", help="continue an interrupted run (same settings)")
    runtime.add_argument("--overwrite", action="store_true", help="discard an earlier run's state and outputs")
    runtime.add_argument("--retry-failed", action="store_true", help="with --resume: process failed inputs again")
    runtime.add_argument("--max-items", type=int, default=None, help="stop after this many new inputs")
    runtime.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def _add_filter_arguments(flt) -> None:
    """What is kept: clip filters, scene splitting, motion and scorers. Defaults are None so that an unset flag
    keeps ``CurateConfig``'s default (the help texts quote it)."""
    flt.add_argument("--min-duration", type=float, default=None, help="seconds (default 2)")
    flt.add_argument(
        "--max-clip-duration",
        type=float,
        default=None,
        help="cut longer scenes into windows of this many seconds; 0 keeps scenes whole (default 10)",
    )
    flt.add_argument("--min-fps", type=float, default=None, help="default 16")
    flt.add_argument("--max-fps", type=float, default=None, help="default: no limit")
    flt.add_argument("--min-short-edge", type=int, default=None, help="pixels (default 480)")
    flt.add_argument("--scene-threshold", type=float, default=None, help="cut score (0.3)")
    flt.add_argument("--min-scene-duration", type=float, default=None, help="seconds between cuts (0.5)")
    flt.add_argument("--no-scene-split", action="store_true", help="do not split videos at scene cuts")
    flt.add_argument(
        "--motion",
        choices=("auto", "flow", "diff", "off"),
        default="auto",
        help="motion measure: optical flow (needs the 'curate' extra), frame differences, or none (default auto)",
    )
    flt.add_argument("--min-motion", type=float, default=None, help="default 0.003 (diff) / 0.001 (flow)")
    flt.add_argument("--max-motion", type=float, default=None, help="default: no limit")
    flt.add_argument("--motion-fps", type=float, default=None, help="motion grid (8 per second)")
    flt.add_argument("--analysis-size", type=int, default=None, help="scene/motion px (64)")
    flt.add_argument("--scorer", action="append", default=[], metavar="SPEC", help="add or configure a scorer")
    flt.add_argument("--no-default-scorers", action="store_true", help="skip brightness, black_frames, blur")
    flt.add_argument("--sample-frames", type=int, default=None, help="frames per clip (8)")
    flt.add_argument("--sample-size", type=int, default=None, help="their shorter side (256)")


def _add_caption_arguments(cap) -> None:
    """Where captions come from: a captioner and its options, or existing captions (manifest fields, sidecars)."""
    cap.add_argument(
        "--captioner",
        default=None,
        metavar="SPEC",
        help="local vision-language model folder (transformers), or a captioner name / package.module:Class, "
        "then comma-separated key=value options",
    )
    cap.add_argument("--caption-frames", type=int, default=None, help="frames per video clip (default 8)")
    cap.add_argument("--caption-size", type=int, default=None, help="shorter side of those frames (448)")
    cap.add_argument("--video-caption-prompt", default=None, help="prompt for video clips")
    cap.add_argument("--image-caption-prompt", default=None, help="prompt for images")
    cap.add_argument("--caption-max-tokens", type=int, default=None, help="default 256")
    cap.add_argument("--caption-device", default=None, help="e.g. cuda (default cpu)")
    cap.add_argument("--caption-dtype", default=None, help="auto, float32, bfloat16, float16")
    cap.add_argument("--recaption", action="store_true", help="caption even items that already have a caption")
    cap.add_argument("--no-sidecar-captions", action="store_true", help="ignore <name>.txt caption files")


def config_from_args(args: argparse.Namespace):
    """The ``CurateConfig`` that the parsed flags describe."""
    from infinitystar.curate.captioner import parse_captioner_spec
    from infinitystar.curate.filters import CurateConfig
    from infinitystar.curate.scorers import DEFAULT_SCORERS, merge_scorer_specs, parse_scorer_spec

    scorers = merge_scorer_specs(
        () if args.no_default_scorers else DEFAULT_SCORERS, [parse_scorer_spec(s) for s in args.scorer]
    )
    captioner = None
    if args.captioner:
        captioner = parse_captioner_spec(
            args.captioner,
            num_frames=args.caption_frames,
            frame_size=args.caption_size,
            video_prompt=args.video_caption_prompt,
            image_prompt=args.image_caption_prompt,
            max_new_tokens=args.caption_max_tokens,
            device=args.caption_device,
            dtype=args.caption_dtype,
        )
    settings = {
        "min_duration": args.min_duration,
        "max_clip_duration": args.max_clip_duration,
        "min_fps": args.min_fps,
        "max_fps": args.max_fps,
        "min_short_edge": args.min_short_edge,
        "scene_threshold": args.scene_threshold,
        "min_scene_duration": args.min_scene_duration,
        "analysis_size": args.analysis_size,
        "min_motion": args.min_motion,
        "max_motion": args.max_motion,
        "motion_fps": args.motion_fps,
        "sample_frames": args.sample_frames,
        "sample_size": args.sample_size,
    }
    return CurateConfig(
        **{k: v for k, v in settings.items() if v is not None},  # unset flags keep CurateConfig's defaults
        split_scenes=not args.no_scene_split,
        motion=args.motion,
        scorers=scorers,
        captioner=captioner,
        recaption=args.recaption,
        sidecar_captions=not args.no_sidecar_captions,
    )


def run(args: argparse.Namespace) -> int:
    import sys

    from infinitystar.curate.outputs import OutputPaths, format_report
    from infinitystar.curate.runner import run_curate

    try:
        report = run_curate(
            args.input,
            args.out,
            config_from_args(args),
            workers=args.workers,
            resume=args.resume,
            overwrite=args.overwrite,
            retry_failed=args.retry_failed,
            max_items=args.max_items,
            progress=not args.quiet,
        )
    except KeyboardInterrupt:
        state = OutputPaths.for_manifest(args.out).state
        print(f"\ninterrupted: finished inputs are kept in {state}; rerun with --resume", file=sys.stderr)
        return 130
    if not args.quiet:
        print(format_report(report))
    return 0
