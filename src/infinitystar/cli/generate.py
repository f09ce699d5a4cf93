"""``infinitystar generate``: one prompt, or a batch from a prompt file (resumable, torchrun-sharded)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from infinitystar.cli.arg_types import SEED_FLAG_HELP, count_arg, seed_arg
from infinitystar.cli.generate_checks import check_model_and_options, plan_batch, plan_single, repair_arguments
from infinitystar.cli.model_options import add_model_arguments, group_size, load_pipeline
from infinitystar.generation.ranges import GUIDANCE_WARN_ABOVE, TEMPERATURE_MIN, TEMPERATURE_WARN_ABOVE
from infinitystar.launch import rank_device, torchrun_env

ORIGINAL_SUFFIX_FLAG = "original"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="generate an image or a video from a prompt (the built-in model unless --checkpoint is given)",
        description="Generate an image (--duration 0) or a video. Without --checkpoint the built-in default model "
        "runs; with --image, image-to-video; with --video, continuation; durations beyond the model's trained "
        "length are generated window after window (long video).",
    )
    p.add_argument("prompt", nargs="?", help="what to generate (omit with --prompts)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--image", help="image-to-video: the first frame (png, jpg, webp)")
    src.add_argument("--video", help="continuation: the video to continue (mp4, webm, mov)")
    p.add_argument("--duration", type=float, help="seconds; 0 = an image (default: the model's, 5 s for 8B)")
    p.add_argument("--aspect-ratio", help="W:H such as 16:9, 1:1, 9:16 (default: the input's, else the model's)")
    p.add_argument("--seed", type=seed_arg, help=SEED_FLAG_HELP + "; batches: default 0")
    p.add_argument("--guidance", choices=("apg", "cfg", "none"), help="guidance method (default: the model's)")
    p.add_argument(
        "--guidance-scale",
        type=float,
        help=f"guidance strength >= 0, 1 = none (default: the model's, 34 for 8B; a warning above "
        f"{GUIDANCE_WARN_ABOVE:g})",
    )
    p.add_argument("--negative-prompt", help="what to steer away from (default: the learned null text)")
    p.add_argument(
        "--temperatures",
        help=f"'IMAGE,VIDEO' sampling temperatures, each >= {TEMPERATURE_MIN:g} (default: the model's, 1,0.4; a "
        f"warning above {TEMPERATURE_WARN_ABOVE:g})",
    )
    p.add_argument(
        "--prompt-suffix",
        help=f"text appended to every prompt; '{ORIGINAL_SUFFIX_FLAG}' = the original scripts' suffix",
    )
    p.add_argument(
        "--out",
        help="output file (.mp4, .gif, .png for --duration 0; default: {prompt}_seed{seed}.mp4 here, never replacing "
        "a file); with --num-samples N: NAME-0.mp4 ... NAME-{N-1}.mp4",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out file (batches: regenerate existing outputs)"
    )
    add_model_arguments(p)
    p.add_argument(
        "--sampler",
        choices=("multinomial", "bernoulli"),
        default="multinomial",
        help="bit sampler: multinomial draws exactly as the original; bernoulli is faster (other draws)",
    )
    p.add_argument("--rewrite-url", help="OpenAI-compatible endpoint to rewrite prompts with (off by default)")
    p.add_argument("--rewrite-model", default="gpt-4o", help="model name for --rewrite-url")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    batch = p.add_argument_group("batch generation")
    batch.add_argument(
        "--prompts",
        help="prompt file (UTF-8): .jsonl, .json (list or VBench with refined prompts), .txt; every bad item is "
        "reported with its line before anything runs, the others are generated (exit status 1 if any failed)",
    )
    batch.add_argument("--out-dir", help="folder for batch outputs (finished files are skipped on rerun)")
    batch.add_argument(
        "--num-samples",
        type=count_arg,
        default=1,
        help="videos per prompt, also for one PROMPT (seeds seed, seed+1, ...)",
    )
    p.set_defaults(func=run)


def _temperatures(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--temperatures must be 'IMAGE,VIDEO' numbers such as 1,0.4; got {text!r}") from None
    if len(values) != 2:
        raise ValueError(f"--temperatures takes two numbers, IMAGE,VIDEO (e.g. 1,0.4); got {text!r}")
    return values


def _suffix(text: str | None) -> str | None:
    if text == ORIGINAL_SUFFIX_FLAG:
        from infinitystar.text.prompts import ORIGINAL_SUFFIX

        return ORIGINAL_SUFFIX
    return text


def run(args: argparse.Namespace) -> int:
    if args.prompts is None and not args.prompt:
        raise ValueError("give a PROMPT, or --prompts FILE for a batch")
    if args.prompts is not None and args.prompt:
        raise ValueError("give either a PROMPT or --prompts FILE, not both")
    if args.prompts is not None and args.out:
        raise ValueError("--out names one file; a batch writes into --out-dir")
    if args.prompts is not None and not args.out_dir:
        raise ValueError("--prompts needs --out-dir FOLDER for the outputs")
    rank, world, local_rank = torchrun_env()
    temperatures = _temperatures(args.temperatures)
    # everything that can be checked is checked before the model loads (see cli/generate_checks.py)
    repair_arguments(args)
    device = rank_device(args.device, local_rank, world)
    config = check_model_and_options(args, temperatures, device)
    if args.prompts is None:
        plan = plan_single(args, config)
    else:
        args.resume_hint = "rerun the same command to continue the batch where it stopped (finished outputs are kept)"
        size = group_size(args)  # the processes of one video share every item; groups split the items
        plan = _batch_todo(args, config, rank // size, world // size, show=rank % size == 0)
        if not plan[0]:
            return _report_batch(args, rank // size, world // size, plan, None, show=rank % size == 0)

    t0 = time.perf_counter()
    pipe = load_pipeline(args, device=device)
    if args.quiet:
        pipe.set_progress_bar_config(disable=True)
    rewriter = None
    if args.rewrite_url:
        from infinitystar.text.rewriter import PromptRewriter

        rewriter = PromptRewriter(args.rewrite_url, os.environ.get("INFINITYSTAR_REWRITE_KEY"), args.rewrite_model)
    common = dict(
        resolution=args.resolution,
        guidance=args.guidance,
        guidance_scale=args.guidance_scale,
        temperatures=temperatures,
        prompt_suffix=_suffix(args.prompt_suffix),
        sampler=args.sampler,
    )
    quiet = args.quiet or not pipe.is_main  # one video on several processes: rank 0 reports
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr))
    log(f"loaded model in {time.perf_counter() - t0:.1f} s on {pipe.device}{_group_note(pipe)}")
    if args.prompts is None:
        status = _single(pipe, args, common, rewriter, log, plan)
    else:
        size = group_size(args)
        status = _batch(pipe, args, common, rewriter, log, rank // size, world // size, plan)
    if pipe.parallel is not None:
        pipe.parallel.finish()  # the other ranks wait for rank 0's file
    return status


def _group_note(pipe) -> str:
    run = pipe.parallel
    if run is None:
        return ""
    return f" (rank 0 of {run.world_size} processes: {run.config.flags()})"


def _prompt(text: str, rewriter, log) -> str:
    from infinitystar.text.rewriter import rewrite_or_keep

    if rewriter is None:
        return text
    new = rewrite_or_keep(text, rewriter)
    log(f"rewritten prompt: {new}")
    return new


def _single(pipe, args, common, rewriter, log, outputs) -> int:
    from infinitystar.cli.outputs import save_output
    from infinitystar.generation.naming import default_filename

    prompt = _prompt(args.prompt, rewriter, log)
    for output in outputs:
        out = pipe(
            prompt,
            image=args.image,
            video=args.video,
            duration=args.duration,
            aspect_ratio=args.aspect_ratio,
            seed=output.seed,
            negative_prompt=args.negative_prompt,
            progress=not args.quiet,
            **common,
        )
        if not pipe.is_main:
            continue  # one video on several processes: rank 0 writes it
        path = output.path or Path(default_filename(args.prompt, out.seed, out.is_image))
        path = save_output(out, path, explicit=output.path is not None, overwrite=args.overwrite)
        seconds = out.timings.get("total", 0.0)
        shape = "x".join(str(v) for v in out.frames.shape[:3])
        print(f"{path}  ({out.mode}, {shape} frames x H x W, seed {out.seed}, {seconds:.1f} s)")
    return 0


def _batch_todo(args, config, rank: int, world: int, *, show: bool = True) -> tuple[list, list[str], int]:
    """(this rank's items still to generate, the bad items of the file, how many are already done); the bad items
    are reported now, before anything runs."""
    from infinitystar.generation.batch import item_output, output_done
    from infinitystar.generation.prompt_files import shard

    items, problems = plan_batch(args, config, rank)
    if problems and rank == 0 and show:
        listing = "\n  ".join(problems)
        print(
            f"infinitystar: {len(problems)} bad item(s) in {args.prompts} are skipped (fix them and rerun; finished "
            f"outputs are kept):\n  {listing}",
            file=sys.stderr,
        )
    mine = shard(items, rank, world)
    out_dir = Path(args.out_dir)

    def done(item) -> bool:
        return not args.overwrite and output_done(item_output(out_dir, item, args.duration))

    todo = [item for item in mine if not done(item)]
    return todo, problems, len(mine) - len(todo)


def _report_batch(args, rank: int, world: int, plan, summary, *, show: bool = True) -> int:
    """The batch's one-line summary (printed by the process that writes, ``show``); the exit status."""
    _, problems, done = plan
    generated = summary.generated if summary is not None else 0
    skipped = done + (summary.skipped if summary is not None else 0)
    failed = (len(summary.failed) if summary is not None else 0) + (len(problems) if rank == 0 else 0)
    if show:
        print(f"rank {rank}/{world}: {generated} generated, {skipped} already done, {failed} failed, in {args.out_dir}")
    return 1 if failed else 0


def _batch(pipe, args, common, rewriter, log, rank: int, world: int, plan) -> int:
    from infinitystar.generation.batch import run_batch

    defaults = dict(
        duration=args.duration,
        image=args.image,
        video=args.video,
        aspect_ratio=args.aspect_ratio,
        negative_prompt=args.negative_prompt,
    )
    rewrite = None if rewriter is None else (lambda text: _prompt(text, rewriter, log))
    summary = run_batch(
        pipe,
        plan[0],
        args.out_dir,
        rank=rank,
        defaults=defaults,
        common=common,
        rewrite=rewrite,
        progress=not args.quiet,
        log=log,
        overwrite=args.overwrite,
    )
    return _report_batch(args, rank, world, plan, summary, show=pipe.is_main)
