"""`rwkv-peft <command>`: one subcommand per job. Each command module parses its flags and calls the library;
no logic lives here. A `UserError` becomes one line on stderr and exit status 2; anything else is a bug and keeps
its traceback."""

import argparse
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except UserError as e:
        print(f"rwkv-peft {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rwkv-peft {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
