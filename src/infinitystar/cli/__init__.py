"""The ``infinitystar`` command line: thin wrappers over the library."""

from __future__ import annotations

import argparse
import importlib
import sys

from infinitystar import __version__

# Subcommands that live next to the code they drive. Each module exposes
# ``add_parser(subparsers)``, which adds one sub-parser with ``set_defaults(func=...)``;
# ``func(args)`` returns the exit status. Keep those modules light to import (import torch-heavy
# code inside ``func``) so that ``infinitystar --help`` stays fast.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "infinitystar.cli.info",
    "infinitystar.cli.generate",
    "infinitystar.cli.assemble",
    "infinitystar.cli.serve",
    "infinitystar.cli.train_tokenizer",
    "infinitystar.cli.extract",
    "infinitystar.cli.curate",
    "infinitystar.cli.train",
    "infinitystar.cli.world",
    "infinitystar.cli.evaluate",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infinitystar", description=__doc__)
    parser.add_argument("--version", action="version", version=f"infinitystar {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        if getattr(exc, "rank", 0) == 0:  # an error every rank of a parallel run raises alike: printed by rank 0
            print(f"infinitystar: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
