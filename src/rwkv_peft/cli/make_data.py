"""`rwkv-peft make-data in.jsonl --repeat 10 --ctx_len 512 --out PREFIX`: jsonl -> binidx, as RWKV-LM's
make_data.py writes it (shuffled copies, token 0 after every document, uint16), printing the magic_prime line.
make_data.py's own positional form `make-data in.jsonl 10 512` (file, repeat, ctx_len) works too."""

from ..errors import UserError


def add_parser(sub) -> None:
    p = sub.add_parser("make-data", help="jsonl -> binidx (.bin/.idx), shuffled and repeated like make_data.py")
    p.add_argument("input", help="jsonl file: text, Alpaca or chat records")
    p.add_argument("n_repeat", nargs="?", type=int, metavar="REPEAT",
                   help="make_data.py's positional form of --repeat")
    p.add_argument("n_ctx_len", nargs="?", type=int, metavar="CTX_LEN",
                   help="make_data.py's positional form of --ctx_len")
    p.add_argument("--repeat", type=int, help="copies of the data, each shuffled (make_data.py's N; default 1)")
    p.add_argument("--ctx_len", type=int, help="context length, to print --magic_prime for --dataload get")
    p.add_argument("--out", help="output prefix (default: the input path without .jsonl)")
    p.add_argument("--seed", type=int, help="shuffle seed (default: a new order every run, as make_data.py)")
    p.add_argument("--skip_bad_records", action="store_true", help="count and skip malformed lines")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data import make_data

    repeat = _one(args, "repeat")
    make_data(args.input, args.out, repeat=1 if repeat is None else repeat, ctx_len=_one(args, "ctx_len"),
              seed=args.seed, skip_bad_records=args.skip_bad_records)
    return 0


def _one(args, name: str) -> int | None:
    """The value of --NAME or of its positional spelling; both given and different is an error."""
    flag, positional = getattr(args, name), getattr(args, f"n_{name}")
    if flag is not None and positional is not None and flag != positional:
        raise UserError(f"--{name} {flag} and the positional {name} {positional} disagree; give one")
    return flag if flag is not None else positional
