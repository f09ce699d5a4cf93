"""The ``infinitystar`` command line: thin wrappers over the library."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from infinitystar import __version__
from infinitystar.cli.errors import report_errors

# Subcommands that live next to the code they drive. Each module exposes
# ``add_parser(subparsers)``, which adds one sub-parser with ``set_defaults(func=...)``;
# ``func(args)`` returns the exit status. Keep those modules light to import (import torch-heavy
# code inside ``func``) so that ``infinitystar --help`` stays fast.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "infinitystar.cli.info",
    "infinitystar.cli.generate",
    "infinitystar.cli.assemble",
    "infinitystar.cli.convert",
    "infinitystar.cli.serve",
    "infinitystar.cli.train_tokenizer",
    "infinitystar.cli.extract",
    "infinitystar.cli.curate",
    "infinitystar.cli.train",
    "infinitystar.cli.world",
    "infinitystar.cli.evaluate",
)
#: set to 1 to see the traceback of every error, also of the mistakes that normally get one line
DEBUG_ENV = "INFINITYSTAR_DEBUG"
DEBUG_HELP = f"show the Python traceback of any error (also: {DEBUG_ENV}=1)"


class _Parser(argparse.ArgumentParser):
    """argparse with a one-message usage error: the mistake and where the options are, not the whole usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="infinitystar", description=__doc__)
    parser.add_argument("--version", action="version", version=f"infinitystar {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    for command in sub.choices.values():  # `infinitystar generate ... --debug` works as well
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    with report_errors(debug, lambda: getattr(args, "resume_hint", None)) as outcome:
        outcome.status = args.func(args)
    return outcome.status


if __name__ == "__main__":
    sys.exit(main())
