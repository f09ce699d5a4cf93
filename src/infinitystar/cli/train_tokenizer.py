"""``infinitystar train-tokenizer``: train the video VAE (stage 1) or the BSQ tokenizer (stage 2).

Light to import: torch and the trainer are imported inside :func:`run`.
"""

from __future__ import annotations

import argparse

from infinitystar.cli.arg_types import RESUME_FLAG_HELP, resume_arg

EPILOG = """\
examples:
  infinitystar train-tokenizer --recipe tokenizer_tiny_cpu --stage continuous --out runs/vae
  infinitystar train-tokenizer --recipe tokenizer_tiny_cpu --stage quantized --init runs/vae --out runs/tok
  infinitystar train-tokenizer --recipe tokenizer_tiny_cpu --stage quantized --from-scratch --out runs/tok0
  infinitystar train-tokenizer ... --out runs/tok --resume          # continue an interrupted run exactly
  infinitystar train-tokenizer ... --set optim.lr=5e-5 --set data.frames=17   # any recipe value
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train-tokenizer",
        help="train the video VAE (continuous) or the BSQ tokenizer (quantized)",
        description=(
            "Stage 'continuous' trains the VAE with a KL term; stage 'quantized' trains it with the multi-scale "
            "BSQ in the loop, initialised from a stage-1 VAE (--init, knowledge inheritance) or from scratch "
            "(--from-scratch). Writes config.json, metrics.jsonl, checkpoints/ and, at the end, the VAE folder vae/ "
            "(model.safetensors with the original key names + config.json) into --out."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from infinitystar.recipes import recipe_names

    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="JSON recipe (e.g. a copy of the packaged tokenizer_tiny_cpu)")
    source.add_argument("--recipe", help=f"a recipe shipped with the package: {', '.join(recipe_names())}")
    p.add_argument("--stage", choices=("continuous", "quantized"), help="overrides the recipe's stage")
    p.add_argument("--out", required=True, help="run folder")
    init = p.add_mutually_exclusive_group()
    init.add_argument("--init", help="VAE to start from: .safetensors / released .pth, or a run folder")
    init.add_argument("--from-scratch", action="store_true", help="quantized stage without inheritance")
    p.add_argument("--steps", type=int, help="total optimisation steps (overrides the recipe)")
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        type=resume_arg,
        metavar="latest|latest-valid|STEP",
        help=RESUME_FLAG_HELP,
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (overrides the recipe)")
    p.add_argument("--seed", type=int, help="overrides the recipe's seed")
    p.add_argument(
        "--data",
        help="clip source (overrides the recipe): 'smooth' (random smooth videos), 'world' (procedural world) "
        "or a manifest file of raw videos",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any recipe value by its dotted path (JSON value), e.g. optim.lr=5e-5 or data.frames=17",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from infinitystar.config_dicts import apply_overrides, parse_override
    from infinitystar.recipes import recipe_path
    from infinitystar.train.recipe import read_recipe
    from infinitystar.train.tokenizer.config import TokenizerTrainConfig
    from infinitystar.train.tokenizer.trainer import TokenizerTrainer

    args.resume_hint = "the checkpoints written so far are kept: add --resume to continue from the newest"
    config = recipe_path(args.recipe) if args.recipe else args.config
    recipe = apply_overrides(read_recipe(config), dict(parse_override(item) for item in args.set))
    cfg = TokenizerTrainConfig.from_dict(recipe)
    changes = {}
    if args.stage is not None:
        changes["stage"] = args.stage
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.device is not None:
        changes["device"] = args.device
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.data is not None:
        if args.data in ("smooth", "world"):
            changes["data"] = dataclasses.replace(cfg.data, source=args.data)
        else:
            changes["data"] = dataclasses.replace(cfg.data, source="media", manifest=args.data)
    if changes:
        cfg = cfg.replace(**changes)
    trainer = TokenizerTrainer(
        cfg, args.out, init=args.init, from_scratch=args.from_scratch, progress=not args.no_progress
    )
    history = trainer.fit(resume=args.resume)
    if history:
        last = history[-1]
        extra = f", bit usage {last['bit_usage']:.3f}" if "bit_usage" in last else ""
        print(f"step {last['step']}: l1 {last['l1']:.4f}, psnr {last['psnr']:.2f} dB{extra}")
    print(f"wrote {trainer.run_dir / 'vae'}/ (model.safetensors, config.json)")
    return 0
