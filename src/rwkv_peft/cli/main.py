"""`rwkv-peft <command>`: one subcommand per job. Each command module parses its flags and calls the library;
no logic lives here. A `UserError` becomes one line on stderr and exit status 2; anything else is a bug and keeps
its traceback."""

import argparse
import os
import sys

from ..errors import UserError
from . import demo, generate, info, make_data, merge, train
from . import eval as evaluate

# Each module exposes `add_parser(subparsers)` registering its subcommand with `func=run`.
COMMANDS = [train, evaluate, merge, generate, make_data, info, demo]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rwkv-peft", description="Fine-tune RWKV-7 / RWKV-6 models with "
                                     "LoRA, PiSSA, MiSS/DiSHA and State tuning.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    parser.commands = sub.choices  # {name: subcommand parser}, for errors in that subcommand's usage
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """parse_args, except that an unknown flag is reported with the subcommand's usage, not the top level's
    (argparse leaves a subcommand's unknown arguments for the top-level parser to report)."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parse(parser, argv)
    args.argv = argv  # `train --devices N` hands its command line on to the worker processes
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except UserError as e:
        from ..train.launch import report_worker_error

        if not report_worker_error(str(e)):  # a worker of `train --devices N`: its launcher prints it once
            rank = os.environ.get("RANK", "0") if "WORLD_SIZE" in os.environ else "0"
            where = f" (rank {rank})" if rank != "0" else ""
            sys.stderr.write(f"rwkv-peft {args.command}: error{where}: {e}\n")
        return 2
    except KeyboardInterrupt:
        print(f"rwkv-peft {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
