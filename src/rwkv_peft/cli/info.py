"""`rwkv-peft info FILE`: what a checkpoint, adapter or state file is, as JSON."""

import json


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="print what a model, adapter or state file is (JSON)")
    p.add_argument("file", help=".pth / .safetensors model, adapter or state file")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..api import describe

    print(json.dumps(describe(args.file), indent=2))
    return 0
