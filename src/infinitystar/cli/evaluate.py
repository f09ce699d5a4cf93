"""``infinitystar evaluate``: generate a prompt file's outputs (resumable, torchrun-sharded), then score them.

    infinitystar evaluate --world-prompts heldout:100,train:100 --out-dir eval/world        # the built-in model
    infinitystar evaluate --prompts prompts.jsonl --out-dir eval/run1 --checkpoint MODEL --clip-model /models/clip
    torchrun --nproc_per_node 8 -m infinitystar.cli evaluate --prompts P --out-dir D --checkpoint MODEL --quiet
    infinitystar evaluate --prompts P --out-dir D --no-generate                                # then score once

Scoring runs in a single process. Under torchrun with WORLD_SIZE > 1 every rank generates its share and stops;
rerun the same command without torchrun and with --no-generate to score. Light to import: the torch-heavy modules
load inside :func:`run`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from infinitystar.cli.arg_types import seed_arg
from infinitystar.cli.model_options import add_model_arguments, group_size, load_pipeline
from infinitystar.generation.ranges import SEED_HELP, draw_seed


def add_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="generate the outputs of a prompt file (resumable) and score them: flicker, smoothness, world "
        "accuracy, CLIP score, FVD",
        description="Generate every item of a prompt file into --out-dir (finished files are skipped; sharded over "
        "ranks under torchrun), then score every output on disk against its prompt and write scores.jsonl and "
        "summary.json. Under torchrun (WORLD_SIZE > 1) the ranks only generate: rerun in one process with "
        "--no-generate to score. Model weights for CLIP and FVD are local files; nothing is downloaded.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", help="prompt file: .jsonl, .json (list or VBench with refined prompts), .txt")
    src.add_argument(
        "--world-prompts",
        metavar="SPEC",
        help="write balanced procedural-world prompts to OUT_DIR/world_prompts.jsonl and evaluate them; SPEC is "
        "SPLIT:N[,SPLIT:N] with SPLIT train, heldout, train-image or heldout-image, optionally for a colour the "
        "default world lacks (pink-heldout:100: pink objects, pink's own held-out combinations)",
    )
    p.add_argument("--out-dir", required=True, help="folder of the outputs, scores.jsonl and summary.json")
    gen = p.add_argument_group("generation (skipped with --no-generate)")
    gen.add_argument("--num-samples", type=int, default=1, help="outputs per prompt (seeds seed, seed+1, ...)")
    gen.add_argument(
        "--seed", type=seed_arg, default=0, help=f"seed of sample 0 of items without a seed: {SEED_HELP} (default 0)"
    )
    gen.add_argument("--duration", type=float, help="seconds for items without one; 0 = images (default: model's)")
    gen.add_argument("--no-generate", action="store_true", help="only score what is already in --out-dir")
    gen.add_argument("--world-seed", type=int, default=0, help="seed that draws the --world-prompts (default 0)")
    sc = p.add_argument_group("scoring")
    sc.add_argument(
        "--metrics",
        help="comma-separated subset of flicker,smoothness,world,clip,fvd (default: flicker,smoothness,world, "
        "plus clip with --clip-model and fvd with --i3d and --real-videos); 'world' scores prompts that follow "
        "the procedural world's grammar",
    )
    sc.add_argument("--clip-model", help="local CLIPModel folder for the CLIP score (pip install 'infinitystar[eval]')")
    sc.add_argument("--i3d", help="local TorchScript I3D file (e.g. i3d_torchscript.pt) for FVD")
    sc.add_argument("--real-videos", help="folder of real videos (searched recursively) that FVD compares with")
    sc.add_argument("--fvd-frames", type=int, default=16, help="frames of each clip FVD uses (default 16)")
    sc.add_argument("--rescore", action="store_true", help="recompute every score (default: reuse unchanged ones)")
    add_model_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-item lines (the summary is printed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from infinitystar.evaluation.prompts import WORLD_PROMPTS_FILE, write_world_prompt_file
    from infinitystar.evaluation.score import parse_metrics
    from infinitystar.generation.prompt_files import read_prompt_file, shard
    from infinitystar.launch import torchrun_env

    if (args.i3d is None) != (args.real_videos is None):
        raise ValueError("FVD needs both --i3d LOCAL_FILE and --real-videos DIR")
    metrics = parse_metrics(args.metrics, clip_model=args.clip_model, fvd_ready=args.i3d is not None)
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
    args.resume_hint = "finished outputs are kept: rerun the same command to continue"
    if args.seed == -1:
        args.seed = draw_seed()
        print(f"infinitystar: random base seed {args.seed} (pass --seed {args.seed} to repeat)", file=sys.stderr)
    out_dir = Path(args.out_dir)
    rank, world, local_rank = torchrun_env()
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))

    if args.world_prompts is not None:
        prompt_file = out_dir / WORLD_PROMPTS_FILE
        # every rank writes the same bytes (atomically) and reads its own write: no rank sees a stale file
        write_world_prompt_file(prompt_file, args.world_prompts, seed=args.world_seed)
    else:
        prompt_file = Path(args.prompts)
    problems: list[str] = []  # every bad item of the file, reported at once: scoring needs all of them
    items = read_prompt_file(prompt_file, num_samples=args.num_samples, seed=args.seed, problems=problems)
    if problems:
        listing = "\n  ".join(problems)
        raise ValueError(f"{len(problems)} bad item(s) in {prompt_file}; fix them and rerun:\n  {listing}")

    status = 0
    generation = None
    if not args.no_generate:
        size = group_size(args)  # the processes of one video (--sp-size, --cfg-parallel) share every item
        generation = _generate(args, shard(items, rank // size, world // size), out_dir, rank, world, local_rank, log)
        status = 1 if generation["failed"] else 0
        if world > 1:
            if rank % size:  # the other processes of a video: rank 0 of the group reports
                return status
            print(
                f"rank {rank}/{world}: {generation['generated']} generated, {generation['skipped']} already done, "
                f"{len(generation['failed'])} failed, in {out_dir}. Scoring runs in one process: rerun this "
                "command without torchrun and with --no-generate to score."
            )
            return status
    elif world > 1 and rank != 0:
        print(f"rank {rank}/{world}: nothing to do (--no-generate scores on rank 0 only)")
        return 0
    return max(status, _score(args, items, prompt_file, out_dir, metrics, generation, local_rank, world, log))


def _generate(args, items, out_dir: Path, rank: int, world: int, local_rank: int, log) -> dict:
    """Generate this rank's missing outputs; the model is loaded only when something is missing."""
    from infinitystar.generation.batch import item_output, output_done, run_batch

    def missing(item) -> bool:
        return not output_done(item_output(out_dir, item, args.duration))

    todo = [it for it in items if missing(it)]
    result = {"generated": 0, "skipped": len(items) - len(todo), "failed": []}
    if not todo:
        log(f"[{rank}] all {len(items)} outputs of this rank exist in {out_dir}; nothing to generate")
        return result
    from infinitystar.launch import rank_device

    t0 = time.perf_counter()
    pipe = load_pipeline(args, device=rank_device(args.device, local_rank, world))
    if args.quiet:
        pipe.set_progress_bar_config(disable=True)
    log(f"[{rank}] loaded model in {time.perf_counter() - t0:.1f} s on {pipe.device}; {len(todo)} outputs to generate")
    summary = run_batch(
        pipe,
        todo,
        out_dir,
        rank=rank,
        defaults={"duration": args.duration},
        common={"resolution": args.resolution},
        progress=not args.quiet,
        log=log,
    )
    if pipe.parallel is not None:
        pipe.parallel.finish()  # the other ranks of each video wait for rank 0's files
    result["generated"] = summary.generated
    result["skipped"] += summary.skipped
    result["failed"] = [{"name": n, "error": e} for n, e in summary.failed]
    return result


def _score(args, items, prompt_file: Path, out_dir: Path, metrics, generation, local_rank: int, world: int, log):
    from infinitystar.evaluation.score import score_outputs
    from infinitystar.evaluation.summary import format_summary, write_report
    from infinitystar.launch import rank_device

    t0 = time.perf_counter()
    report = score_outputs(
        items,
        out_dir,
        metrics=metrics,
        clip_model=args.clip_model,
        i3d=args.i3d,
        real_videos=args.real_videos,
        fvd_frames=args.fvd_frames,
        device=rank_device(args.device, local_rank, world),
        rescore=args.rescore,
        log=log,
    )
    extra = {
        "prompts": str(prompt_file),
        "out_dir": str(out_dir),
        "metrics_requested": list(metrics),
        "generation": generation,
        "reused_scores": report.reused,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    scores, summary = write_report(report, out_dir, extra)
    print(format_summary(report.summary))
    print(f"\nwrote {summary} and {scores}")
    return 0
