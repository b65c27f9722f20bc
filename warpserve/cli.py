"""The `warpserve` command line: one subcommand per module, imported only when used."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from types import ModuleType

# subcommand -> module exposing add_arguments(parser) and run(args) -> int
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("warpserve.commands.generate", "generate text from a prompt, streamed"),
    "serve": ("warpserve.commands.serve", "start the OpenAI / Hugging Face compatible server"),
    "bench": ("warpserve.bench.cli", "benchmarks: throughput, serve, ladder, kernels, ..."),
    "optimize": ("warpserve.commands.optimize", "export, optimize and validate an encoder"),
    "models": ("warpserve.commands.models", "list the bundled models and where they are"),
}


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2, no traceback."""


def _load(name: str) -> ModuleType:
    return importlib.import_module(SUBCOMMANDS[name][0])


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="warpserve", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    subparsers = parser.add_subparsers(dest="command", required=True)
    wanted = next((a for a in argv if a in SUBCOMMANDS), None)
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text)
        if name == wanted:  # import only the module that runs
            _load(name).add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(_load(args.command).run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (UserError, ValueError, FileNotFoundError, OSError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
