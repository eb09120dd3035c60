"""`rwkv-peft make-data in.jsonl --repeat 10 --ctx_len 512 --out PREFIX`: jsonl -> binidx, as RWKV-LM's
make_data.py writes it (shuffled copies, token 0 after every document, uint16), printing the magic_prime line."""


def add_parser(sub) -> None:
    p = sub.add_parser("make-data", help="jsonl -> binidx (.bin/.idx), shuffled and repeated like make_data.py")
    p.add_argument("input", help="jsonl file: text, Alpaca or chat records")
    p.add_argument("--repeat", type=int, default=1, help="copies of the data, each shuffled (make_data.py's N)")
    p.add_argument("--ctx_len", type=int, help="context length, to print --magic_prime for --dataload get")
    p.add_argument("--out", help="output prefix (default: the input path without .jsonl)")
    p.add_argument("--seed", type=int, help="shuffle seed (default: a new order every run, as make_data.py)")
    p.add_argument("--skip_bad_records", action="store_true", help="count and skip malformed lines")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data import make_data

    make_data(args.input, args.out, repeat=args.repeat, ctx_len=args.ctx_len, seed=args.seed,
              skip_bad_records=args.skip_bad_records)
    return 0
