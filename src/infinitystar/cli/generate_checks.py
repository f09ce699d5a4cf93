"""Everything ``infinitystar generate`` checks before it loads a model: nothing is loaded for a request that will be
refused, and no generation ends in an error that was known before it started.

Checked here, in this order: the device, the model folder and its generation settings (read without the weights),
the guidance and temperatures (the range policy of :mod:`infinitystar.generation.ranges`), the negative prompt, then
for one prompt the request itself (the pipeline's own :func:`~infinitystar.generation.plan.plan_request`: duration,
aspect ratio, image or video headers), that the image or video decodes, the seeds and every output path; for a batch
file every item (all problems of the file at once, with ``file:line``) and the output folder.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from infinitystar.cli.outputs import (
    check_output_file,
    check_output_folder,
    estimate_bytes,
    numbered,
)
from infinitystar.generation.ranges import SEED_MAX, RangeError, check_seed, draw_seed, resolve_seed
from infinitystar.text.prompts import repair_text


@dataclass(frozen=True)
class Output:
    """One output of ``generate PROMPT``: its seed and explicit path (None: named after the prompt and seed)."""

    seed: int
    path: Path | None


def repair_arguments(args: argparse.Namespace) -> None:
    """Prompt arguments typed in a terminal that is not UTF-8, decoded (with a warning) instead of failing later."""
    for name in ("prompt", "negative_prompt", "prompt_suffix"):
        value = getattr(args, name, None)
        if isinstance(value, str):
            setattr(args, name, repair_text(value, f"--{name.replace('_', '-')}" if name != "prompt" else "PROMPT"))


def check_model_and_options(args: argparse.Namespace, temperatures, device):
    """The model's generation settings and the sampling options, every flag checked against them; no weights read."""
    from infinitystar.cli.model_options import check_model_arguments, hub_options
    from infinitystar.devices import resolve_device
    from infinitystar.generation.layouts import model_folder, read_pipeline_config
    from infinitystar.generation.plan import check_negative_prompt, sampling_options

    check_model_arguments(args)
    resolve_device(device)
    # a repo id is fetched here (only this resolution's parts), once: loading the model later finds it in the cache
    config = read_pipeline_config(model_folder(args.checkpoint, args.resolution, hub_options(args)), args.resolution)
    options = sampling_options(config, args.guidance, args.guidance_scale, temperatures, args.sampler)
    check_negative_prompt(args.negative_prompt, options)
    return config


def _check_inputs_decode(image: str | None, video: str | None) -> None:
    """An image decodes fully, a video's first frame decodes: a broken file fails now, not after loading a model."""
    from infinitystar.media.decode import verify_decodes

    if image is not None:
        verify_decodes(image, "image")
    if video is not None:
        verify_decodes(video, "video")


def plan_single(args: argparse.Namespace, config) -> list[Output]:
    """The outputs of ``generate PROMPT`` (``--num-samples`` of them, seeds seed, seed+1, ...); the request, its
    inputs and every output path are checked."""
    from infinitystar.generation.plan import plan_request

    req = plan_request(
        config,
        [args.prompt],
        image=args.image,
        video=args.video,
        duration=args.duration,
        resolution=args.resolution,
        aspect_ratio=args.aspect_ratio,
    )
    _check_inputs_decode(args.image, args.video)
    count = args.num_samples
    base = resolve_seed(args.seed)
    if base + count - 1 > SEED_MAX:
        raise RangeError(f"--seed {base} + {count - 1} (one seed per sample) is beyond the largest seed, {SEED_MAX}")
    image = req.seconds == 0
    height, width = config.schedule(req.h_div_w, 1).pixel_hw
    if args.out:
        out = Path(args.out)
        need = estimate_bytes(req.target_frames, height, width, out.suffix.lower())
        paths = [
            check_output_file(numbered(out, k, count), image=image, overwrite=args.overwrite, need_bytes=need)
            for k in range(count)
        ]
    else:
        need = estimate_bytes(req.target_frames, height, width, ".png" if image else ".mp4")
        check_output_folder(Path.cwd(), "the current folder", need)
        paths = [None] * count
    return [Output(base + k, p) for k, p in enumerate(paths)]


def _item_problem(item, args: argparse.Namespace, config) -> str | None:
    from infinitystar.generation.plan import plan_request

    try:
        plan_request(
            config,
            [item.prompt],
            image=item.image or args.image,
            video=item.video or args.video,
            duration=item.duration if item.duration is not None else args.duration,
            resolution=args.resolution,
            aspect_ratio=item.aspect_ratio or args.aspect_ratio,
        )
    except (ValueError, TypeError) as exc:
        return f"{item.source}: {exc}"
    return None


def plan_batch(args: argparse.Namespace, config, rank: int) -> tuple[list, list[str]]:
    """The good items of ``--prompts FILE`` and the problems of the bad ones (``file:line: reason``, each once).

    Every item is checked as the pipeline will check it (prompt, duration, aspect ratio, image or video files), so
    that a bad item is reported before anything runs and the others still generate. A file whose every item is bad
    is refused.
    """
    from infinitystar.generation.prompt_files import read_prompt_file

    check_output_folder(args.out_dir, "--out-dir")
    if args.seed is None:
        base = 0  # batches are reproducible by default: item k of a prompt uses seed k
    else:
        base = check_seed(args.seed)
        if base is None:
            base = draw_seed()
            if rank == 0:
                print(
                    f"infinitystar: random base seed {base} (pass --seed {base} to repeat this batch)", file=sys.stderr
                )
    problems: list[str] = []
    items = read_prompt_file(args.prompts, num_samples=args.num_samples, seed=base, problems=problems)
    good = []
    for item in items:
        problem = _item_problem(item, args, config)
        if problem is None:
            good.append(item)
        else:
            problems.append(problem)
    problems = list(dict.fromkeys(problems))  # the samples of one bad line report it once
    if not good:
        listing = "\n  ".join(problems)
        raise ValueError(f"nothing to generate: every item of {args.prompts} has a problem:\n  {listing}")
    return good, problems
