"""``infinitystar train``: train the transformer from a JSON recipe.

Examples::

    infinitystar train --recipe tiny_cpu --out runs/tiny                   # a recipe shipped with the package
    infinitystar train --config recipe.json --resume                       # continue the newest checkpoint
    torchrun --nproc_per_node 8 -m infinitystar.cli train --config recipe.json --cache cache/480p \\
        --init infinitystar_8b_480p_weights --set sp_size=2

The recipe is a :class:`~infinitystar.train.transformer.config.TrainConfig` in JSON; the flags below
override it, ``--set key.path=value`` overrides anything else. The resolved config is saved in
the run folder.
"""

from __future__ import annotations

import argparse

from infinitystar.cli.arg_types import RESUME_FLAG_HELP, resume_arg
from infinitystar.cli.model_options import add_hub_arguments, hub_options

#: flag -> dotted config path
_FLAGS = {
    "steps": "steps",
    "lr": "optim.lr",
    "out": "out",
    "init": "model.init",
    "cache": "data.cache",
    "device": "device",
    "batch_size": "data.batch_size",
    "seed": "seed",
    "preset": "model.preset",
    "sp_size": "sp_size",
    "grad_accum": "optim.grad_accum",
    "save_every": "save_every",
    "text_encoder": "data.text_encoder",
}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the transformer (one process, or torchrun + FSDP2)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from infinitystar.recipes import recipe_names

    source = p.add_mutually_exclusive_group()
    source.add_argument("--config", help="JSON recipe (TrainConfig); defaults for everything it does not set")
    source.add_argument("--recipe", help=f"a recipe shipped with the package: {', '.join(recipe_names())}")
    p.add_argument("--steps", type=int, help="total optimizer steps")
    p.add_argument("--lr", type=float, help="learning rate (optim.lr)")
    p.add_argument("--out", help="run folder: config, checkpoints, metrics.jsonl, final model")
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        type=resume_arg,
        metavar="latest|latest-valid|STEP",
        help=RESUME_FLAG_HELP,
    )
    p.add_argument(
        "--init",
        help="initial weights: released model folder or repo id (FoundationVision/InfinityStar: the recipe's "
        "resolution), released-format checkpoint, the original's global_step_N.pth, trained-model folder or run folder",
    )
    p.add_argument("--cache", help="latent cache folder written by `infinitystar extract` (data.cache)")
    p.add_argument("--device", help="auto, cpu or cuda")
    p.add_argument("--batch-size", type=int, help="samples per data-parallel rank and micro-step")
    p.add_argument("--seed", type=int)
    p.add_argument("--preset", help="model preset (model.preset)")
    p.add_argument("--sp-size", type=int, help="sequence-parallel ranks (Ulysses)")
    p.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step")
    p.add_argument("--save-every", type=int, help="checkpoint every N steps")
    p.add_argument("--text-encoder", help="T5 folder for samples without cached text features")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any config value, e.g. optim.ema_decay=0.999"
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    add_hub_arguments(p)
    p.set_defaults(func=run)


def resolve_config(args: argparse.Namespace):
    from infinitystar.config_dicts import parse_override
    from infinitystar.train.transformer.config import TrainConfig

    overrides = {}
    for flag, path in _FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides[path] = value
    if args.cache is not None:
        overrides["data.synthetic"] = None  # --cache replaces a synthetic data section
    if args.resume:
        overrides["resume"] = args.resume
    if args.no_progress:
        overrides["log.progress"] = False
    for item in args.set:
        key, value = parse_override(item)
        overrides[key] = value
    config = args.config
    if getattr(args, "recipe", None):
        from infinitystar.recipes import recipe_path

        config = recipe_path(args.recipe)
    return TrainConfig.load(config, overrides)


def run(args: argparse.Namespace) -> int:
    import gc
    import json

    args.resume_hint = "the checkpoints written so far are kept: add --resume to continue from the newest"
    from infinitystar.train.transformer.config import resolve_init

    cfg = resolve_config(args)
    # a repo id is fetched once here, before anything is written (the transformer of the recipe's resolution)
    cfg.model.init = resolve_init(cfg.model.init, cfg.schedule.resolution, hub_options(args))
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    from infinitystar.train.distributed import shutdown
    from infinitystar.train.transformer.trainer import Trainer

    trainer = Trainer(cfg)
    env = trainer.env
    try:
        result = trainer.train()
    finally:
        # the sharded model and its device mesh hold the process group: release them while the interpreter is
        # fully alive, so that gloo's threads stop here and not during interpreter teardown. Without this, one
        # rank of a finished 2-process CPU run aborted at exit ("terminate called without an active exception")
        # in 5 of 55 runs on 2 busy cores; with it in 0 of 55.
        del trainer
        gc.collect()
        shutdown(env)
    if env.is_main:
        last = result.losses.get(result.step)
        tail = f", last loss {last:.4f}" if last is not None else ""
        print(f"trained to step {result.step}{tail}; final model: {result.final_model}")
    return 0
