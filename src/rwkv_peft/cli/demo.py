"""`rwkv-peft demo`: build a tiny RWKV-7, train it on the bundled sample, LoRA-fine-tune, merge, generate (CPU,
a few minutes). See `rwkv_peft.train.demo`."""


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="tiny end-to-end run on CPU: train, LoRA fine-tune, merge, generate")
    p.add_argument("--out", default="rwkv-peft-demo", help="folder for every file the demo writes")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps per training stage")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1 is fastest for this tiny model on a "
                   "busy machine)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..train.demo import run_demo

    run_demo(args.out, steps=args.steps, threads=args.threads)
    return 0
