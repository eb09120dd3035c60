"""`rwkv-peft eval`: loss and perplexity of a model (optionally with an adapter and/or state) on a dataset.

    rwkv-peft eval --model base.pth --adapter out/rwkv-3.pth --data_file val.jsonl
    {"loss": 2.31, "ppl": 10.07, "tokens": 52311, "batches": 120}
"""

import json

from .model_args import add_model_args


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="loss / perplexity of a model (+ adapter / state) on a dataset (JSON)")
    add_model_args(p)
    p.add_argument("--data_file", required=True, help="jsonl file, binidx prefix, or text")
    p.add_argument("--data_type", default="jsonl", help="jsonl, binidx, utf-8, utf-16le")
    p.add_argument("--ctx_len", type=int, default=1024, help="tokens per sample")
    p.add_argument("--chunk_ctx", type=int, default=0, help="run long samples in chunks carrying the state")
    p.add_argument("--micro_bsz", type=int, default=4)
    p.add_argument("--loss_mask", default="pad", help="pad (every token) or qa (assistant answers only)")
    p.add_argument("--dataload", default="pad", help="pad, pack or get, as in training")
    p.add_argument("--max_batches", type=int, default=0, help="stop after N batches (0: all)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16", "fp16"])
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..train.eval import evaluate_file

    result = evaluate_file(args.model, args.data_file, adapter=args.adapter, state=args.state,
                           lora_alpha=args.lora_alpha, pissa_init=args.lora_init, data_type=args.data_type,
                           ctx_len=args.ctx_len, chunk_ctx=args.chunk_ctx, micro_bsz=args.micro_bsz,
                           loss_mask=args.loss_mask, dataload=args.dataload, max_batches=args.max_batches,
                           precision=args.precision, device=args.device, quant=args.quant,
                           check_fingerprint=not args.ignore_base_fingerprint)
    print(json.dumps(result.as_dict()))
    return 0
